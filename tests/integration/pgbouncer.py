"""A PgBouncer in front of the tests' PostgreSQL, for the settings a pooler needs.

Debian's package (installed on first use, infra/debian_tools.py), run as the account
PostgreSQL runs as when we are root: PgBouncer refuses to run as root. It takes the
URL's password from its clients (SCRAM) and gives it to the server.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from infra import _process, _unprivileged_user
from infra._process import LOCALHOST, RunAs
from infra.debian_tools import ensure_debian_tool
from tests.must_run import skip_or_fail

START_TIMEOUT_S = 10.0
# From 1.21 PgBouncer can track prepared statements (on by default from 1.24), which
# would hide what DB_PREPARED_STATEMENTS is for; 1.18 knows no such parameter, and
# refuses to start with it.
_TRACKING_SINCE = (1, 21)


@contextlib.contextmanager
def pgbouncer(database_url: str, folder: Path, *, pool_mode: str, pool_size: int) -> Iterator[str]:
    """A URL reaching `database_url`'s database through PgBouncer in `pool_mode`, with
    `pool_size` server connections for every client."""
    binary = ensure_debian_tool("pgbouncer", "pgbouncer")
    if binary is None:
        skip_or_fail("no pgbouncer here, and apt-get cannot install it")
    server = conninfo_to_dict(database_url)
    port = _process.free_port()
    user = server.get("user", "postgres")
    password = server.get("password") or ""
    dbname = server.get("dbname") or user  # libpq's default, as for any URL without one
    account = _unprivileged_user.account_for_postgres()
    _write_auth_file(folder / "users.txt", user, password, account)
    config = folder / "pgbouncer.ini"
    config.write_text(
        "\n".join(
            [
                "[databases]",
                f"{dbname} = host={server.get('host', LOCALHOST)} port={server.get('port', 5432)}"
                f" dbname={dbname} user={user}",
                "[pgbouncer]",
                f"listen_addr = {LOCALHOST}",
                f"listen_port = {port}",
                "unix_socket_dir =",
                # PgBouncer checks its clients by SCRAM against auth_file's plain-text
                # password, and logs in to the server with it (a trust server takes none).
                f"auth_type = {'scram-sha-256' if password else 'trust'}",
                f"auth_file = {folder / 'users.txt'}",
                f"pool_mode = {pool_mode}",
                f"default_pool_size = {pool_size}",
                *(["max_prepared_statements = 0"] if _can_track_prepared(binary) else []),
                "",
            ]
        )
    )
    if account is not None:
        _unprivileged_user.make_reachable(config, account)  # the folder, down to the files
    log_path = folder / "pgbouncer.log"
    child = _process.spawn([binary, str(config)], log_path=log_path, cwd=folder, run_as=account)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _process.port_accepts(port):
            if child.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"pgbouncer did not start:\n{_process.tail(log_path)}")
            time.sleep(0.05)
        yield make_conninfo(database_url, host=LOCALHOST, port=port)
    finally:
        _process.stop_process(
            child.pid, marker=str(config), stop_signal=signal.SIGTERM, timeout_s=5, child=child
        )


def _write_auth_file(path: Path, user: str, password: str, account: RunAs | None) -> None:
    """`"user" "password"`, readable by PgBouncer alone (it runs as `account` when we are root)."""
    quoted = [value.replace('"', '""') for value in (user, password)]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "w") as file:
        if account is not None:
            os.fchown(fd, account.uid, account.gid)
        file.write(f'"{quoted[0]}" "{quoted[1]}"\n')


def _can_track_prepared(binary: str) -> bool:
    """Whether this PgBouncer has `max_prepared_statements`."""
    answer = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
    ).stdout
    match = re.search(r"PgBouncer (\d+)\.(\d+)", answer)
    if match is None:
        raise RuntimeError(f"cannot tell pgbouncer's version from {answer!r}")
    return (int(match[1]), int(match[2])) >= _TRACKING_SINCE
