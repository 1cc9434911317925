"""What every local server of infra/ shares: restart, close, and use as a context manager."""

from __future__ import annotations

import shutil
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Self


class LocalServer(ABC):
    """A server in a folder; subclasses provide `start()` and `stop()`."""

    base_dir: Path | None
    _owns_base_dir: bool

    @abstractmethod
    def start(self, *, wait: bool = True) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop, and delete the folder if this object created it."""
        self.stop()
        if self._owns_base_dir and self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
