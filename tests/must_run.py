"""Skips that CI must not take: where a test cannot run here, it skips, but with
`TESTS_FAIL_ON_SKIP=1` (set by .ci/run) it fails instead, so that a CI machine that lost
a tier (no PgBouncer to be had, servers the session did not start) does not pass unseen.

Only for skips CI's own machine never needs: those that depend on the machine (root,
dual-stack IPv6, the libpq psycopg2 was built against) stay plain skips."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

FAIL_ON_SKIP = "TESTS_FAIL_ON_SKIP"


def skip_or_fail(reason: str) -> NoReturn:
    if os.environ.get(FAIL_ON_SKIP) == "1":
        pytest.fail(f"cannot run here, and {FAIL_ON_SKIP}=1 asks every such test to: {reason}")
    pytest.skip(reason)
