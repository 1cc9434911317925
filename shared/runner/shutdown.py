"""Ctrl-C, SIGTERM and SIGHUP as one event the main thread waits on, and a deadline for
stopping."""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import NoReturn

log = logging.getLogger(__name__)

# What the README promises a stop takes (Delivery guarantees, "Shutdown"), the
# interpreter's own exit left out.
SHUTDOWN_BUDGET_S = 4.5

# SIGHUP too: a closed terminal sends it, and with no handler the process would die
# without stopping what it started (an embedded PostgreSQL runs in a session of its own).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StartUpInterrupted(KeyboardInterrupt):
    """A stop signal during start-up: raised where the main thread is, so that what was
    started so far is undone on the way out instead of waiting for start-up to end."""


class StartUpInterruption:
    """Until `StopSignal.install()`, each stop signal raises StartUpInterrupted, except
    inside `deferred()`, which it outlasts; install() on the main thread only."""

    def __init__(self) -> None:
        self._deferring = False
        self._pending: str | None = None

    def install(self) -> None:
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._handle)

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """A step that must not be cut half-way (initdb, which a second try cannot finish
        over its own remains): a stop signal meanwhile takes effect when it is over."""
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False
        if self._pending is not None:
            raise StartUpInterrupted(self._pending)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self._deferring:
            self._pending = name
            return
        raise StartUpInterrupted(name)


class StopSignal:
    """Turns the STOP_SIGNALS into `requested`; install() on the main thread only."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.signal_name: str | None = None

    def install(self) -> None:
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._handle)

    def wait(self, healthy: Callable[[], bool] = lambda: True) -> bool:
        """Block until a signal (True) or until `healthy()` turns false (False)."""
        # Short waits in a loop: the signal handler runs between them.
        while not self.requested.wait(0.2):
            if not healthy():
                return False
        return True

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.requested.is_set():
            log.warning("already stopping", extra={"signal": signal.Signals(signum).name})
            return
        self.signal_name = signal.Signals(signum).name
        self.requested.set()


def exit_now_if_late(late: bool, code: int) -> None:
    """End the process at once when a worker missed the shutdown budget.

    Its batch still runs on an executor thread, and the interpreter joins those at
    exit: a statement waiting on a frozen database would
    hold the process up for as long as it waits, past the budget the platform's
    SIGKILL is timed against. Ending it here is what that SIGKILL would do a little
    later: the batch's offsets were never stored, so the partition's next owner starts
    from it, and what it wrote is recognised there (README, "Delivery guarantees").
    """
    if late:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def exit_with(code: int) -> NoReturn:
    """Exit with `code`, which a stop signal from here on no longer changes: the
    interpreter puts the default handlers back while it shuts down, so a second SIGTERM
    in that last fraction of a second would end the process as killed (-15) instead."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)  # the one disposition shutdown keeps
    sys.exit(code)


def finish_and_exit_status(*, signalled: bool, late: bool) -> int:
    """The status a long-running process exits with once it has stopped: 0 after a stop
    signal, 1 when its work stopped on its own (for a supervisor to restart it); at once
    when a worker missed the shutdown budget (`exit_now_if_late`)."""
    code = 0 if signalled else 1
    exit_now_if_late(late, code)
    skip_exit_collection()
    return code


def skip_exit_collection() -> None:
    """Everything is closed: spare the interpreter's exit a garbage collection of the model's
    objects (half a second measured), which would only free memory the OS takes back anyway."""
    gc.freeze()


class Deadline:
    """What is left of a time budget, for bounding each step of a shutdown."""

    def __init__(self, budget_s: float) -> None:
        self.started = time.monotonic()
        self._end = self.started + budget_s

    def remaining(self, floor_s: float = 0.1) -> float:
        return max(floor_s, self._end - time.monotonic())

    def elapsed(self) -> float:
        return time.monotonic() - self.started
