"""Applies the yandex-pgmigrate migrations in db/ to DATABASE_URL.

Run as `python -m shared.db.migrations` (what `make migrate` does); the tests and
the local runner call `apply_migrations` with their own URL. Any number of processes
may call it at once (every runner start does): pgmigrate takes no lock of its own, so
each call holds a PostgreSQL advisory lock around it, and the later ones find the
schema already there. pgmigrate runs in this process, under the lock: were it a child
process, a migrator stopped mid-way would release the lock while its child went on
migrating beside the next one.

The lock is waited for by asking again, not by a blocking `pg_advisory_lock`: a
migrator blocked in that SELECT holds a snapshot, and a CREATE INDEX CONCURRENTLY of
the migrator holding the lock waits for every older snapshot to end, which that one
does not until it gets the lock. PostgreSQL's deadlock detection cannot see the cycle
(the lock is held by another session than pgmigrate's), so the build would wait out
its lock_timeout and fail, leaving an invalid index, on every start that two
migrators share.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
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
LOCK_WAIT_TIMEOUT_S = 600
LOCK_POLL_INTERVAL_S = 0.1


def apply_migrations(database_url: str, migrations_dir: Path = MIGRATIONS_DIR) -> None:
    """Bring the schema to the latest version; a no-op when it is already there."""
    conninfo = _pgmigrate_conninfo(database_url)
    _refuse_options_pgmigrates_libpq_cannot_read(conninfo)
    with psycopg.connect(
        database_url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
    ) as lock_holder:
        # The lock lasts as long as this session, idle while pgmigrate works: a role's
        # idle_session_timeout (PostgreSQL 14 on) must not end it mid-run, letting the
        # next migrator in beside pgmigrate.
        lock_holder.execute(
            "SELECT set_config('idle_session_timeout', '0', false)"
            " WHERE current_setting('server_version_num')::int >= 140000"
        )
        _wait_for_the_lock(lock_holder)
        try:
            _run_pgmigrate(conninfo, _version_table_schema(lock_holder), migrations_dir)
        finally:
            # Closing the connection releases the lock too; an unlock that fails (the
            # connection dropped) must not hide pgmigrate's own error.
            with contextlib.suppress(psycopg.Error):
                lock_holder.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATIONS_LOCK,))


def _wait_for_the_lock(conn: psycopg.Connection) -> None:
    deadline = time.monotonic() + LOCK_WAIT_TIMEOUT_S
    while not conn.execute("SELECT pg_try_advisory_lock(%s)", (_MIGRATIONS_LOCK,)).fetchone()[0]:
        if time.monotonic() > deadline:
            raise RuntimeError(f"another migrator held the lock for over {LOCK_WAIT_TIMEOUT_S} s")
        time.sleep(LOCK_POLL_INTERVAL_S)


def _version_table_schema(conn: psycopg.Connection) -> str:
    """Where pgmigrate keeps `schema_version`: with the tables the service uses, which
    its search_path finds, or on a fresh database in the first schema of the search_path
    that exists, where the migrations create them (a URL's `options` may set it).

    pgmigrate's own default is `public` whatever the search_path, so that a second
    schema of one database was never migrated: `public.schema_version` said the first
    one's tables were there. A schema migrated that way, its tables there and its
    versions in `public`, keeps its versions in `public`."""
    first, found_in = conn.execute(
        """
        SELECT current_schema(),
               (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE c.oid = to_regclass('moderation_results'))
        """
    ).fetchone()
    search_path = conn.execute("SHOW search_path").fetchone()[0]
    if first is None:
        raise RuntimeError(
            f"no schema of the search_path ({search_path}) exists to migrate: create it,"
            " or name an existing one in the URL's options (-c search_path=...)"
        )
    if found_in is None:
        return first  # a fresh schema
    if found_in != first:
        # A schema made since ahead of the tables' on the search_path ("$user", say): a
        # migration's new table would land there, away from the others, and a fresh
        # copy of them all would hide the service's data.
        raise RuntimeError(
            f"the service's tables are in schema {found_in}, but {first} comes first on "
            f"the search_path ({search_path}), where new ones would be created: set the "
            f"URL's options to -c search_path={found_in}"
        )
    has_versions, public_has_versions = conn.execute(
        "SELECT to_regclass(format('%%I.schema_version', %s::text)) IS NOT NULL,"
        " to_regclass('public.schema_version') IS NOT NULL",
        (found_in,),
    ).fetchone()
    return "public" if not has_versions and public_has_versions else found_in


def _pgmigrate_conninfo(database_url: str) -> str:
    """pgmigrate's connection string: with a connect timeout, so an unreachable server
    fails instead of hanging."""
    params = conninfo_to_dict(database_url)
    params.setdefault("connect_timeout", str(CONNECT_TIMEOUT_S))
    return make_conninfo(**params)


def _run_pgmigrate(conninfo: str, schema: str, migrations_dir: Path) -> None:
    """`pgmigrate --target latest --force_mixed --ungroup migrate`, with db/migrations.yml."""
    options = argparse.Namespace(
        conn=conninfo,
        base_dir=str(migrations_dir),
        target="latest",
        schema=schema,
        # A database that has some versions applied, and lacks both transactional and
        # NONTRANSACTIONAL ones (one at V0006 or older, say), gets them in mixed steps
        # only with this; pgmigrate refuses otherwise.
        force_mixed=True,
        # Each transactional migration in a transaction of its own. Grouped, as pgmigrate
        # does by default, the locks of every pending one were held until the last
        # committed: V0002's on moderation_results through V0003's hashing of every
        # dead letter. An interrupted run still resumes from the last version applied.
        ungroup=True,
        # Its check that a migration touches no other schema cannot run for
        # NONTRANSACTIONAL ones; pgmigrate turns it off itself when no schema is named.
        disable_schema_check=True,
    )
    # Imported here: pgmigrate brings psycopg2, which only the migrations use.
    import pgmigrate
    import psycopg2
    import sqlparse

    # It says at INFO what it does, statement by statement: a start-up logs only whether
    # it worked, and pgmigrate's ERROR lines, which show the statement that failed.
    logging.getLogger("pgmigrate").setLevel(logging.WARNING)
    # As pgmigrate's own command does: sqlparse's limits would refuse a long statement
    # (an INSERT of a few thousand rows) that the command takes.
    sqlparse.engine.grouping.MAX_GROUPING_DEPTH = None
    sqlparse.engine.grouping.MAX_GROUPING_TOKENS = None
    config = None
    try:
        config = pgmigrate.get_config(str(migrations_dir), options)
        pgmigrate.migrate(config)
    except (pgmigrate.MigrateError, psycopg2.Error, sqlparse.exceptions.SQLParseError) as error:
        # "Unable to apply statement" says nothing more: the server's words are its cause.
        cause = error.__context__ if isinstance(error, pgmigrate.MigrateError) else None
        reason = f"{error}: {str(cause).strip()}" if cause is not None else str(error).strip()
        # A statement's error holds its cursor, and so the connection, which pgmigrate
        # opens before it can fail setting up (config is None then).
        for failure in (error, cause):
            if (cursor := getattr(failure, "cursor", None)) is not None:
                cursor.connection.close()
        raise RuntimeError(f"pgmigrate failed: {reason}") from error
    finally:
        # On success pgmigrate has closed it; on a failure its transaction is rolled
        # back here, not whenever the garbage collector gets to it.
        if config is not None and config.conn_instance is not None:
            config.conn_instance.close()


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
    from shared.command_line import sigterm_as_ctrl_c, stopped_status, take_no_arguments
    from shared.settings import InvalidSettings, get_settings

    take_no_arguments("python -m shared.db.migrations", __doc__, argv)
    try:
        database_url = get_settings().database_url
    except InvalidSettings as error:
        print(f"migrations failed: {error}", file=sys.stderr)
        return 1
    try:
        # Stopped, the statement running ends, its transaction is rolled back and the
        # lock released: the next run starts from the last version applied.
        with sigterm_as_ctrl_c():
            apply_migrations(database_url)
    except KeyboardInterrupt as stop:
        print(f"migrations stopped on {server_of(database_url)}", file=sys.stderr)
        return stopped_status(stop)
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
