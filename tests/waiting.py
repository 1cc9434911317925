"""A bounded wait for any test tier: poll a condition, fail with what it waited for."""

from __future__ import annotations

import time
from collections.abc import Callable

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
