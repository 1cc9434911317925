"""A bounded wait for any test tier: poll a condition, fail with what it waited for."""

from __future__ import annotations

import selectors
import time
from collections.abc import Callable
from typing import IO

import pytest

POLL_INTERVAL_S = 0.05


def wait_until(
    predicate: Callable[[], object],
    *,
    timeout_s: float,
    what: str,
    poll_interval_s: float = POLL_INTERVAL_S,
) -> object:
    """Poll `predicate` until it is truthy; fail the test with `what` after the deadline."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(poll_interval_s)
    pytest.fail(f"timed out after {timeout_s} s waiting for {what}")


def read_first_line_within(stream: IO[str], *, timeout_s: float, what: str) -> str:
    """The first line a child process writes to `stream` (a pipe), or fail the test with
    `what` if none comes within `timeout_s`: a child that hangs before writing it must
    not hold the test until pytest's own timeout, which says nothing of why.

    The first only: `readline` may read further lines into the stream's buffer, where
    the selector, which watches the pipe, cannot see them."""
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        if not selector.select(timeout_s):
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
    # The children write the line whole, and flush it: what is ready is the full line.
    return stream.readline()
