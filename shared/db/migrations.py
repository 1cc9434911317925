"""Applies the yandex-pgmigrate migrations in db/ to DATABASE_URL.

Run as `python -m shared.db.migrations` (what `make migrate` does); the tests and
the local runner call `apply_migrations` with their own URL. Any number of processes
may call it at once (every runner start does): pgmigrate takes no lock of its own, so
each call holds a PostgreSQL advisory lock around it, and the later ones find the
schema already there.

The lock is waited for by asking again, not by a blocking `pg_advisory_lock`: a
migrator blocked in that SELECT holds a snapshot, and a CREATE INDEX CONCURRENTLY of
the migrator holding the lock waits for every older snapshot to end, which that one
does not until it gets the lock. PostgreSQL's deadlock detection cannot see the cycle
(the lock is held by another session than pgmigrate's), so the build would wait out
its lock_timeout and fail, leaving an invalid index, on every start that two
migrators share.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict, make_conninfo

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "db"
# Any fixed bigint; only callers of this function take it.
_MIGRATIONS_LOCK = 0x61645F6D6F64  # "ad_mod"
CONNECT_TIMEOUT_S = 10
MIGRATE_TIMEOUT_S = 600
LOCK_POLL_INTERVAL_S = 0.1


def apply_migrations(database_url: str, migrations_dir: Path = MIGRATIONS_DIR) -> None:
    """Bring the schema to the latest version; a no-op when it is already there."""
    conninfo, password = _pgmigrate_conninfo(database_url)
    _refuse_options_pgmigrates_libpq_cannot_read(conninfo)
    with psycopg.connect(
        database_url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
    ) as lock_holder:
        _wait_for_the_lock(lock_holder)
        try:
            _run_pgmigrate(conninfo, password, migrations_dir)
        finally:
            # Closing the connection releases the lock too; an unlock that fails (the
            # connection dropped) must not hide pgmigrate's own error.
            with contextlib.suppress(psycopg.Error):
                lock_holder.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATIONS_LOCK,))


def _wait_for_the_lock(conn: psycopg.Connection) -> None:
    deadline = time.monotonic() + MIGRATE_TIMEOUT_S
    while not conn.execute("SELECT pg_try_advisory_lock(%s)", (_MIGRATIONS_LOCK,)).fetchone()[0]:
        if time.monotonic() > deadline:
            raise RuntimeError(f"another migrator held the lock for over {MIGRATE_TIMEOUT_S} s")
        time.sleep(LOCK_POLL_INTERVAL_S)


def _pgmigrate_conninfo(database_url: str) -> tuple[str, str | None]:
    """pgmigrate's connection string, and the password apart: it goes by environment, not
    on the command line any local user can read in /proc. With a connect timeout, so an
    unreachable server fails instead of hanging."""
    params = conninfo_to_dict(database_url)
    password = params.pop("password", None)
    params.setdefault("connect_timeout", str(CONNECT_TIMEOUT_S))
    return make_conninfo(**params), None if password is None else str(password)


def _run_pgmigrate(conninfo: str, password: str | None, migrations_dir: Path) -> None:
    env = dict(os.environ)
    if password is not None:
        env["PGPASSWORD"] = password
    command = [
        sys.executable,
        "-m",
        "pgmigrate",
        "--conn",
        conninfo,
        "--base_dir",
        str(migrations_dir),
        "--target",
        "latest",
        # A database that has some versions applied, and lacks both transactional and
        # NONTRANSACTIONAL ones (one at V0006 or older, say), gets them in mixed steps
        # only with this; pgmigrate refuses otherwise. (Its schema check, which cannot
        # run for NONTRANSACTIONAL migrations, is already off without --schema.)
        "--force_mixed",
        "migrate",
    ]
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, check=False, env=env, timeout=MIGRATE_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"pgmigrate did not finish within {MIGRATE_TIMEOUT_S} s") from None
    if result.returncode != 0:
        raise RuntimeError(
            f"pgmigrate failed with exit code {result.returncode}:\n{result.stderr.strip()}"
        )


def _refuse_options_pgmigrates_libpq_cannot_read(conninfo: str) -> None:
    """pgmigrate connects with psycopg2, linked to the system's libpq, which may be older
    than the one psycopg bundles: an option only the newer one knows
    (`load_balance_hosts`, `require_auth`) passes the settings and fails here, so the
    error says which, and what to do, instead of pgmigrate's traceback."""
    import psycopg2.extensions

    try:
        psycopg2.extensions.parse_dsn(conninfo)
    except psycopg2.ProgrammingError as error:
        libpq = psycopg2.extensions.libpq_version()
        raise RuntimeError(
            f"pgmigrate's libpq ({libpq // 10000}.{libpq % 10000}) cannot read DATABASE_URL:"
            f" {str(error).strip()}; run the migrations with a URL without that option"
        ) from None


def main(argv: Sequence[str] | None = None) -> int:
    from shared.command_line import take_no_arguments
    from shared.settings import InvalidSettings, get_settings

    take_no_arguments("python -m shared.db.migrations", __doc__, argv)
    try:
        database_url = get_settings().database_url
    except InvalidSettings as error:
        print(f"migrations failed: {error}", file=sys.stderr)
        return 1
    try:
        apply_migrations(database_url)
    except (RuntimeError, psycopg.Error) as error:  # pgmigrate's failure, or the server's
        # Named, since libpq's words ("connection timeout expired") may not name it.
        print(f"migrations failed on {server_of(database_url)}: {error}", file=sys.stderr)
        return 1
    print(f"migrations applied on {server_of(database_url)}")
    return 0


def server_of(database_url: str) -> str:
    """host:port/database as libpq resolves them (the connection string, then PGHOST and
    the other variables, then its defaults), for a message; never the password."""
    given = _conninfo_values(pq.Conninfo.parse(database_url.encode()))
    defaults = _conninfo_values(pq.Conninfo.get_defaults())

    def value(keyword: str) -> str:
        return given.get(keyword) or defaults.get(keyword) or ""

    host = value("hostaddr") or value("host") or "the local socket"
    if "@" in host:
        # An unescaped @ in a URL's password: libpq reads the rest of it as the host.
        host = "a host cut from a URL whose password holds an unescaped @"
    # Several hosts (libpq tries each in turn) pair with as many ports, or all with one.
    hosts = host.split(",")
    ports = (value("port") or "5432").split(",")
    if len(ports) != len(hosts):
        ports = ports[:1] * len(hosts)
    servers = ",".join(f"{h}:{p or 5432}" for h, p in zip(hosts, ports, strict=True))
    return f"{servers}/{value('dbname') or value('user')}"


def _conninfo_values(options: list[pq.ConninfoOption]) -> dict[str, str]:
    return {o.keyword.decode(): o.val.decode() for o in options if o.val is not None}


if __name__ == "__main__":
    sys.exit(main())
