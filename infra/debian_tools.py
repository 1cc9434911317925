"""Tools from Debian's packages that a bench or a test uses (wrk, pgbouncer): installed
with apt-get on first use when we may (root, with apt-get there), since a CI machine
starts without them."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess

# Each apt-get step: three of them fit in pytest's limit of 300 s for a test.
STEP_TIMEOUT_S = 90
# Where Debian puts a daemon's binary (pgbouncer), which a user's PATH may leave out.
_SBIN = ("/usr/sbin", "/sbin")


@functools.cache  # one try a process: a failed install would fail the same way again
def ensure_debian_tool(command: str, package: str) -> str | None:
    """The path of `command`, installing `package` when it is missing and we may; None
    when it cannot be had (no apt-get, not root, no network, a held dpkg lock)."""
    found = _which(command)
    if found or shutil.which("apt-get") is None or os.geteuid() != 0:
        return found
    # The package lists may be missing or stale on a fresh machine: update, and try again.
    for step in (
        ["apt-get", "install", "-y", package],
        ["apt-get", "update"],
        ["apt-get", "install", "-y", package],
    ):
        try:
            subprocess.run(step, capture_output=True, timeout=STEP_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            return None
        found = _which(command)
        if found:
            return found
    return None


def _which(command: str) -> str | None:
    return shutil.which(command, path=os.pathsep.join([os.environ.get("PATH", ""), *_SBIN]))
