"""The migrations build the schema on an empty database, and running them again changes nothing."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg import errors, sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from shared.db.migrations import MIGRATIONS_DIR, apply_migrations
from tests.python_snippets import REPO_ROOT
from tests.waiting import wait_until


@pytest.fixture
def empty_database(infra) -> Iterator[str]:
    """A uuid-named database of its own on the session's server, dropped afterwards."""
    name = f"migrations_{uuid.uuid4().hex[:12]}"
    server = conninfo_to_dict(infra.database_url)
    admin_url = make_conninfo(**{**server, "dbname": "postgres"})
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_conninfo(**{**server, "dbname": name})
    finally:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def _applied_versions(conninfo: str) -> dict:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pgmigrate",
            "--conn",
            conninfo,
            "--base_dir",
            str(MIGRATIONS_DIR),
            "info",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"pgmigrate info failed: {result.stderr}"
    return json.loads(result.stdout)


def _installed(conninfo: str) -> list[int]:
    """The versions pgmigrate has applied (its `info` lists the others too)."""
    versions = _applied_versions(conninfo).values()
    return sorted(entry["version"] for entry in versions if entry["installed_on"] is not None)


def _versions_on_disk() -> list[int]:
    names = (path.name for path in (MIGRATIONS_DIR / "migrations").glob("V*__*.sql"))
    return sorted(int(re.match(r"V(\d+)__", name).group(1)) for name in names)


def _insert_seller_and_ad(conn: psycopg.Connection, images_qty: int = 1) -> int:
    seller_id = conn.execute(
        "INSERT INTO sellers (is_verified) VALUES (false) RETURNING id"
    ).fetchone()[0]
    return conn.execute(
        "INSERT INTO ads (seller_id, name, description, category, images_qty)"
        " VALUES (%s, 'bike', 'a red bike', 3, %s) RETURNING id",
        (seller_id, images_qty),
    ).fetchone()[0]


def _an_ad_on_the_schema_up_to(version: int, database_url: str, tmp_path) -> int:
    """The schema as migrations up to `version` left it, with one seller and ad; the ad's id."""
    before = tmp_path / "db"
    shutil.copytree(MIGRATIONS_DIR, before)
    for later in (before / "migrations").glob("V*__*.sql"):
        if int(re.match(r"V(\d+)__", later.name).group(1)) > version:
            later.unlink()
    apply_migrations(database_url, before)
    with psycopg.connect(database_url, autocommit=True, connect_timeout=5) as conn:
        return _insert_seller_and_ad(conn)


def test_migrations_build_a_schema_that_enforces_its_constraints(empty_database: str) -> None:
    apply_migrations(empty_database)

    with psycopg.connect(empty_database, connect_timeout=5) as conn:
        with pytest.raises(errors.CheckViolation), conn.transaction():
            _insert_seller_and_ad(conn, images_qty=11)
        with pytest.raises(errors.CheckViolation), conn.transaction():
            conn.execute("INSERT INTO moderation_results (item_id, status) VALUES (1, 'weird')")
        with pytest.raises(errors.ForeignKeyViolation), conn.transaction():
            conn.execute(
                "INSERT INTO ads (seller_id, name, description, category, images_qty)"
                " VALUES (999, 'x', 'y', 1, 0)"
            )


def test_deleting_an_ad_keeps_its_moderation_results(empty_database: str) -> None:
    apply_migrations(empty_database)
    with psycopg.connect(empty_database, connect_timeout=5) as conn:
        ad_id = _insert_seller_and_ad(conn)
        task_id = conn.execute(
            "INSERT INTO moderation_results (item_id) VALUES (%s) RETURNING id", (ad_id,)
        ).fetchone()[0]

        conn.execute("DELETE FROM ads WHERE id = %s", (ad_id,))

        remaining = conn.execute(
            "SELECT item_id, status FROM moderation_results WHERE id = %s", (task_id,)
        ).fetchall()
    assert remaining == [(ad_id, "pending")]


def test_tasks_are_indexed_only_as_the_services_statements_read_them(
    empty_database: str,
) -> None:
    apply_migrations(empty_database)

    with psycopg.connect(empty_database, autocommit=True, connect_timeout=5) as conn:
        indexes = {
            row[0]
            for row in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'moderation_results'"
            )
        }

    # By id, and the relay's backlog; no longer by ad (V0010), which nothing reads.
    assert indexes == {
        "moderation_results_pkey",
        "moderation_results_unpublished_by_tries_idx",
    }


def test_applying_the_migrations_again_is_a_no_op(empty_database: str) -> None:
    apply_migrations(empty_database)
    first = _applied_versions(empty_database)

    apply_migrations(empty_database)

    # installed_on is part of what is compared: a re-applied migration would get a new one.
    assert _applied_versions(empty_database) == first
    assert sorted(entry["version"] for entry in first.values()) == _versions_on_disk()
    assert all(entry["installed_on"] is not None for entry in first.values())


def test_migrations_run_from_several_processes_at_once_all_succeed(empty_database: str) -> None:
    # Every runner start applies them; pgmigrate alone lets two of them race on an
    # empty database (both run CREATE TYPE), and the loser fails its start-up.
    with ThreadPoolExecutor(3) as pool:
        # list() waits for all three and raises the first failure, if any.
        list(pool.map(lambda _: apply_migrations(empty_database), range(3)))

    assert sorted(map(int, _applied_versions(empty_database))) == _versions_on_disk()


def test_v0006_marks_tasks_finished_before_their_publish_was_acknowledged_as_published(
    empty_database: str, tmp_path
) -> None:
    # The schema as it stood before V0006, with a task an earlier consumer finished
    # without marking it published.
    ad_id = _an_ad_on_the_schema_up_to(5, empty_database, tmp_path)
    with psycopg.connect(empty_database, autocommit=True, connect_timeout=5) as conn:
        finished, pending = (
            conn.execute(
                "INSERT INTO moderation_results (item_id, status, error_message, processed_at)"
                " VALUES (%s, %s, %s, %s) RETURNING id",
                (ad_id, status, reason, processed),
            ).fetchone()[0]
            for status, reason, processed in (
                ("failed", "Ad not found", datetime(2026, 1, 2, tzinfo=UTC)),
                ("pending", None, None),
            )
        )

    apply_migrations(empty_database)

    with psycopg.connect(empty_database, connect_timeout=5) as conn:
        rows = dict(conn.execute("SELECT id, published_at FROM moderation_results").fetchall())
    assert rows == {finished: datetime(2026, 1, 2, tzinfo=UTC), pending: None}


def test_a_migration_gives_up_a_busy_tables_lock_before_the_writes_behind_it_time_out(
    empty_database: str, tmp_path
) -> None:
    # V0007 alters moderation_results. While it waits for the lock, every statement of
    # the service on the table queues behind it: the migration must give up first.
    ad_id = _an_ad_on_the_schema_up_to(6, empty_database, tmp_path)
    with (
        psycopg.connect(empty_database, connect_timeout=5) as reader,
        psycopg.connect(empty_database, autocommit=True, connect_timeout=5) as service,
        ThreadPoolExecutor(1) as migrator,
    ):
        reader.execute("SELECT count(*) FROM moderation_results")  # a long read, still open
        migrating = migrator.submit(apply_migrations, empty_database)
        wait_until(
            lambda: _waiting_for_a_lock(service),
            timeout_s=30,
            what="the migration to wait for moderation_results' lock",
        )
        # As the service writes: under its statement timeout, queued behind the migration.
        service.execute("SET statement_timeout = 5000")
        service.execute("INSERT INTO moderation_results (item_id) VALUES (%s)", (ad_id,))

        with pytest.raises(RuntimeError, match="canceling statement due to lock timeout"):
            migrating.result(timeout=60)
        assert _installed(empty_database) == list(range(1, 7))
    # The reader is gone: the next start applies the rest.
    apply_migrations(empty_database)
    assert _installed(empty_database) == _versions_on_disk()


@pytest.mark.parametrize(
    "role_timeout",
    [
        # pgmigrate's main connection holds a transaction open, idle, while a
        # NONTRANSACTIONAL step runs on its other connection: the server ended that
        # connection, and the job exited 1 with the migration applied.
        "idle_in_transaction_session_timeout",
        # The step's wait for the reader was cancelled at the role's timeout rather than
        # after its own minute, and every start failed alike.
        "statement_timeout",
    ],
)
def test_a_concurrently_step_outlasting_a_roles_timeout_still_succeeds(
    empty_database: str, tmp_path, role_timeout: str
) -> None:
    # Behind a pooler the README puts the service's timeouts on its role, and the
    # migrations job runs as that role; the step here waits out a reader holding the table.
    _an_ad_on_the_schema_up_to(9, empty_database, tmp_path)
    with_role_timeout = psycopg.conninfo.make_conninfo(
        empty_database, options=f"-c {role_timeout}=500"
    )
    with (
        psycopg.connect(empty_database, connect_timeout=5) as reader,
        ThreadPoolExecutor(1) as migrator,
    ):
        reader.execute("SELECT count(*) FROM moderation_results")  # a read, still open
        migrating = migrator.submit(apply_migrations, with_role_timeout)
        time.sleep(2)  # four times the timeout, the step waiting for the reader
        reader.rollback()
        migrating.result(timeout=60)

    assert _installed(empty_database) == _versions_on_disk()


def _waiting_for_a_lock(conn: psycopg.Connection) -> bool:
    return conn.execute(
        "SELECT count(*) > 0 FROM pg_stat_activity"
        " WHERE wait_event_type = 'Lock' AND query LIKE 'ALTER TABLE moderation_results%%'"
    ).fetchone()[0]


def test_v0008_builds_the_relays_index_over_a_build_that_was_interrupted(
    empty_database: str, tmp_path
) -> None:
    ad_id = _an_ad_on_the_schema_up_to(7, empty_database, tmp_path)
    with psycopg.connect(empty_database, autocommit=True, connect_timeout=5) as conn:
        for _ in range(2):
            conn.execute("INSERT INTO moderation_results (item_id) VALUES (%s)", (ad_id,))
        # A CONCURRENTLY build that fails leaves an invalid index of its name behind, as
        # an interrupted V0008 would: this one fails on the two tasks of one ad.
        with pytest.raises(errors.UniqueViolation):
            conn.execute(
                "CREATE UNIQUE INDEX CONCURRENTLY moderation_results_unpublished_by_tries_idx"
                " ON moderation_results (item_id)"
            )

    apply_migrations(empty_database)

    with psycopg.connect(empty_database, connect_timeout=5) as conn:
        indexes = conn.execute(
            "SELECT c.relname, i.indisvalid, pg_get_indexdef(i.indexrelid)"
            " FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " WHERE i.indrelid = 'moderation_results'::regclass AND i.indpred IS NOT NULL"
        ).fetchall()
        conn.execute("SET enable_seqscan = off")  # two rows: the plan, not its cost
        plan = "\n".join(
            row[0]
            for row in conn.execute(
                "EXPLAIN SELECT id FROM moderation_results WHERE published_at IS NULL"
                " ORDER BY publish_tries, created_at LIMIT 500"
            )
        )
    # The relay's index alone, valid, in its claim order; the one before V0008 is gone.
    [(name, valid, definition)] = indexes
    assert (name, valid) == ("moderation_results_unpublished_by_tries_idx", True)
    assert "(publish_tries, created_at) WHERE (published_at IS NULL)" in definition
    assert "Index Scan using moderation_results_unpublished_by_tries_idx" in plan


def test_v0009_gives_keys_from_before_it_a_day_and_still_takes_keys_written_without_expiry(
    empty_database: str, tmp_path
) -> None:
    ad_id = _an_ad_on_the_schema_up_to(8, empty_database, tmp_path)
    # A key of the release before, and its writer, which knows no expiry.
    write_as_before = (
        "WITH task AS (INSERT INTO moderation_results (item_id) VALUES (%s) RETURNING id)"
        " INSERT INTO idempotency_keys (key, task_id, item_id) SELECT %s, id, %s FROM task"
    )
    with psycopg.connect(empty_database, autocommit=True, connect_timeout=5) as conn:
        conn.execute(write_as_before, (ad_id, "before", ad_id))
        # Made 20 hours ago: a day from the migration, not from its creation.
        conn.execute("UPDATE idempotency_keys SET created_at = now() - interval '20 hours'")
        [(file_before,)] = conn.execute("SELECT pg_relation_filenode('idempotency_keys')")

    apply_migrations(empty_database)

    with psycopg.connect(empty_database, autocommit=True, connect_timeout=5) as conn:
        [(file_after,)] = conn.execute("SELECT pg_relation_filenode('idempotency_keys')")
        # A process of the release before, still running during a rolling upgrade.
        conn.execute(write_as_before, (ad_id, "during", ad_id))
        lifetimes = dict(
            conn.execute(
                "SELECT key, round(extract(epoch FROM expires_at - now()) / 3600)"
                " FROM idempotency_keys"
            ).fetchall()
        )
    # Neither expires sooner than a day from now: as long as the new setting's default.
    assert lifetimes == {"before": 24, "during": 24}
    assert file_after == file_before  # the column came without rewriting the table


def _in_schema(conninfo: str, schema: str) -> str:
    return make_conninfo(conninfo, options=f"-c search_path={schema}")


def _tables_by_schema(conninfo: str) -> dict[str, set[str]]:
    with psycopg.connect(conninfo, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_name IN ('moderation_results', 'schema_version')"
        ).fetchall()
    tables: dict[str, set[str]] = {}
    for schema, table in rows:
        tables.setdefault(schema, set()).add(table)
    return tables


def test_each_schema_a_url_names_is_migrated_on_its_own(empty_database: str) -> None:
    # Two deployments in one database, told apart by their URLs' search_path; a name
    # that must be quoted too.
    with psycopg.connect(empty_database, autocommit=True, connect_timeout=5) as conn:
        conn.execute('CREATE SCHEMA staging; CREATE SCHEMA "Prod2"')

    for _ in range(2):  # and again, finding their tables
        apply_migrations(_in_schema(empty_database, "staging"))
        apply_migrations(_in_schema(empty_database, '"Prod2"'))

    both = {"moderation_results", "schema_version"}
    assert _tables_by_schema(empty_database) == {"staging": both, "Prod2": both}


def test_a_schema_whose_versions_an_earlier_release_kept_in_public_keeps_them_there(
    empty_database: str,
) -> None:
    # pgmigrate's own default: the versions in public, the tables where search_path says.
    with psycopg.connect(empty_database, autocommit=True, connect_timeout=5) as conn:
        conn.execute("CREATE SCHEMA staging")
    subprocess.run(
        [
            *(sys.executable, "-m", "pgmigrate", "--conn", _in_schema(empty_database, "staging")),
            *("--base_dir", str(MIGRATIONS_DIR), "--target", "latest", "migrate"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    versions_before = _applied_versions(empty_database)

    apply_migrations(_in_schema(empty_database, "staging"))

    assert _tables_by_schema(empty_database) == {
        "public": {"schema_version"},
        "staging": {"moderation_results"},
    }
    assert _applied_versions(empty_database) == versions_before


# Stands for `python -m shared.db.migrations`, whose directory is fixed: its SIGTERM handler
# around a run of the given migrations.
_STOPPABLE_MIGRATOR = """
import sys
from shared.command_line import sigterm_as_ctrl_c
from shared.db import migrations
with sigterm_as_ctrl_c():
    migrations.apply_migrations(sys.argv[1], migrations.Path(sys.argv[2]))
"""


def test_a_migrator_stopped_mid_way_rolls_back_and_leaves_no_one_migrating(
    empty_database: str, tmp_path
) -> None:
    # A child process running pgmigrate would go on after its parent, whose lock then
    # let the next migrator in beside it.
    migrations = tmp_path / "db"
    shutil.copytree(MIGRATIONS_DIR, migrations)
    (migrations / "migrations" / "V0100__slow.sql").write_text(
        "SELECT pg_sleep(3);\nCREATE TABLE slow_migration_done (id int);\n"
    )
    migrator = subprocess.Popen(
        [sys.executable, "-c", _STOPPABLE_MIGRATOR, empty_database, str(migrations)],
        cwd=REPO_ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with psycopg.connect(empty_database, autocommit=True, connect_timeout=5) as watcher:
            wait_until(
                lambda: _running(watcher, "SELECT pg_sleep(3)%"),
                timeout_s=60,
                what="the slow migration to start",
            )
            migrator.send_signal(signal.SIGTERM)
            _, stderr = migrator.communicate(timeout=30)

            assert "Terminated" in stderr
            assert not _running(watcher, "%")  # no statement of pgmigrate's goes on
            done = watcher.execute("SELECT to_regclass('slow_migration_done')").fetchone()
            assert done == (None,)
    finally:
        migrator.kill()
        migrator.wait()
    assert 100 not in _installed(empty_database)
    apply_migrations(empty_database, migrations)  # the lock is free: the next run goes on
    assert 100 in _installed(empty_database)


def test_each_migration_commits_on_its_own_so_a_failing_one_keeps_those_before_it(
    empty_database: str, tmp_path
) -> None:
    # Grouped in one transaction (pgmigrate's default), V0002 held its lock on
    # moderation_results until every later one had run, and a failure undid them all.
    _an_ad_on_the_schema_up_to(1, empty_database, tmp_path / "first")
    migrations = tmp_path / "db"
    shutil.copytree(MIGRATIONS_DIR, migrations)
    for later in (migrations / "migrations").glob("V*__*.sql"):
        if int(re.match(r"V(\d+)__", later.name).group(1)) > 2:
            later.unlink()
    (migrations / "migrations" / "V0003__fails.sql").write_text("SELECT 1 / 0;\n")

    with pytest.raises(RuntimeError, match="division by zero"):
        apply_migrations(empty_database, migrations)

    assert _installed(empty_database) == [1, 2]


def _running(conn: psycopg.Connection, query_like: str) -> bool:
    return conn.execute(
        "SELECT count(*) > 0 FROM pg_stat_activity"
        " WHERE application_name LIKE 'pgmigrate-%%' AND state = 'active' AND query LIKE %s",
        (query_like,),
    ).fetchone()[0]


def test_a_schema_made_ahead_of_the_tables_on_the_search_path_is_refused_not_filled(
    empty_database: str,
) -> None:
    # The default search_path is "$user", public: a schema of the role's name, made after
    # the tables went to public, comes first. Migrated there, a fresh copy of every table
    # would have hidden the service's data.
    apply_migrations(empty_database)
    with psycopg.connect(empty_database, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(_role(conn))))

    with pytest.raises(RuntimeError, match="the service's tables are in schema public, but"):
        apply_migrations(empty_database)

    assert _tables_by_schema(empty_database) == {"public": {"moderation_results", "schema_version"}}
    apply_migrations(_in_schema(empty_database, "public"))  # as the error says


def _role(conn: psycopg.Connection) -> str:
    return conn.execute("SELECT current_user").fetchone()[0]


def test_a_migration_of_one_long_statement_is_applied_as_pgmigrates_own_command_would(
    empty_database: str, tmp_path
) -> None:
    migrations = tmp_path / "db"
    shutil.copytree(MIGRATIONS_DIR, migrations)
    rows = ", ".join(f"({i})" for i in range(3000))  # past sqlparse's 10,000 tokens
    (migrations / "migrations" / "V0100__long.sql").write_text(
        f"CREATE TABLE long_statement (id int);\nINSERT INTO long_statement VALUES {rows};\n"
    )

    apply_migrations(empty_database, migrations)

    with psycopg.connect(empty_database, connect_timeout=5) as conn:
        assert conn.execute("SELECT count(*) FROM long_statement").fetchone() == (3000,)


def test_a_migrator_failing_as_it_sets_up_leaves_no_connection_of_pgmigrates_open(
    empty_database: str, tmp_path
) -> None:
    # pgmigrate connects, then runs the session's statements: a failure there left its
    # connection held by the error's traceback.
    migrations = tmp_path / "db"
    shutil.copytree(MIGRATIONS_DIR, migrations)
    (migrations / "migrations.yml").write_text("session:\n  - SET no_such_setting = 1\n")

    with pytest.raises(RuntimeError, match='unrecognized configuration parameter "no_such_'):
        apply_migrations(empty_database, migrations)

    with psycopg.connect(empty_database, autocommit=True, connect_timeout=5) as watcher:
        wait_until(
            lambda: not _connected(watcher),
            timeout_s=10,
            what="pgmigrate's connections to close",
        )


def _connected(conn: psycopg.Connection) -> bool:
    return conn.execute(
        "SELECT count(*) > 0 FROM pg_stat_activity WHERE application_name LIKE 'pgmigrate-%%'"
    ).fetchone()[0]
