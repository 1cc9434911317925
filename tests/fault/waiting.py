"""A bounded wait that, when it times out, says what it waited for and what it saw."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import pytest

from tests.fault.consumer_process import ConsumerProcess

T = TypeVar("T")
POLL_INTERVAL_S = 0.05


def wait_for(
    predicate: Callable[[], T],
    *,
    timeout_s: float,
    what: str,
    seen: Callable[[], str] | None = None,
    watch: Sequence[ConsumerProcess] = (),
) -> T:
    """Poll `predicate` until it is truthy; fail after `timeout_s` with `what` and `seen()`,
    or at once if a process in `watch` exits (it would never make `predicate` true)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if result:
            return result
        for process in watch:
            if not process.is_alive():
                pytest.fail(
                    f"consumer (pid {process.pid}) exited while waiting for {what}:\n"
                    f"{process.log_tail()}"
                )
        if time.monotonic() >= deadline:
            break
        time.sleep(POLL_INTERVAL_S)
    detail = f"; last seen: {seen()}" if seen is not None else ""
    pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}{detail}")
