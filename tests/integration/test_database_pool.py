"""The connection pool (shared/db/pool.py) against a real PostgreSQL: outages it reports
as temporary, and how it recovers from them."""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from contextlib import ExitStack

import psycopg
import psycopg.sql
import psycopg_pool
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from shared.db import pool
from shared.db.pool import Database
from shared.errors import DatabaseUnavailable
from tests.integration.database_rows import seed_ads
from tests.integration.wiring import wired_services

pytestmark = pytest.mark.integration

POOLED = 4


def _backends_of(conn: psycopg.Connection, application_name: str) -> list[int]:
    rows = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (application_name,)
    ).fetchall()
    return [pid for (pid,) in rows]


def test_after_its_connections_are_dropped_only_one_request_fails(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No connection ever counts as idle (whatever the machine's speed or uptime), so
    # only the check after a broken one can get them pinged.
    monkeypatch.setattr(pool, "IDLE_CHECK_AFTER_S", math.inf)
    application_name = "pool-recovery-test"
    url = psycopg.conninfo.make_conninfo(database_url, application_name=application_name)
    db = Database(url, min_size=0, max_size=POOLED)
    try:
        with ExitStack() as held:  # the pool opens POOLED connections, all just returned
            for _ in range(POOLED):
                held.enter_context(db.autocommit()).conn.execute("SELECT 1")
        with psycopg.connect(database_url, autocommit=True) as admin:
            backends = _backends_of(admin, application_name)
            assert len(backends) == POOLED
            for pid in backends:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))

        outcomes = []
        for _ in range(POOLED):
            try:
                with db.autocommit() as session:
                    outcomes.append(session.conn.execute("SELECT 1").fetchone()[0])
            except DatabaseUnavailable:
                outcomes.append("unavailable")
    finally:
        db.close()

    # The first request meets a dropped connection; the others get checked ones.
    assert outcomes == ["unavailable", *[1] * (POOLED - 1)]


def test_a_write_refused_by_a_read_only_server_is_a_temporary_error(database_url: str) -> None:
    db = Database(database_url, min_size=0, max_size=1)
    try:
        with pytest.raises(DatabaseUnavailable, match="read-only"), db.autocommit() as session:
            # What a server in recovery, or one just promoted from it, answers to a write.
            session.conn.execute("SET default_transaction_read_only = on")
            session.conn.execute("CREATE TABLE refused_by_a_read_only_server (id int)")
    finally:
        db.close()


def test_a_transaction_rolled_back_to_break_a_deadlock_is_a_temporary_error(
    database_url: str,
) -> None:
    """Two transactions lock two rows in opposite orders, as two consumers finishing
    overlapping batches can: PostgreSQL rolls one back, a temporary error that breaks no
    connection."""
    table = f"rows_locked_in_opposite_orders_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(f"DROP TABLE IF EXISTS {table}")
        admin.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, n int)")
        admin.execute(f"INSERT INTO {table} VALUES (1, 0), (2, 0)")
    db = Database(database_url, min_size=0, max_size=2)
    both_hold_their_first_row = threading.Barrier(2, timeout=10)
    outcomes: dict[int, str] = {}

    def lock_in_order(first: int, second: int) -> None:
        try:
            with db.autocommit() as session, session.atomic():
                session.conn.execute(f"UPDATE {table} SET n = n + 1 WHERE id = %s", (first,))
                both_hold_their_first_row.wait()
                session.conn.execute(f"UPDATE {table} SET n = n + 1 WHERE id = %s", (second,))
            outcomes[first] = "committed"
        except DatabaseUnavailable as error:
            outcomes[first] = str(error)

    threads = [
        threading.Thread(target=lock_in_order, args=order, daemon=True)
        for order in ((1, 2), (2, 1))
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
            assert not thread.is_alive(), "a transaction neither committed nor was rolled back"
    finally:
        db.close()
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(f"DROP TABLE {table}")

    committed = [first for first, outcome in outcomes.items() if outcome == "committed"]
    rolled_back = [outcome for outcome in outcomes.values() if "deadlock detected" in outcome]
    assert len(committed) == 1 and len(rolled_back) == 1, outcomes
    # The connections are as they were: no ping before each one's next use. (A deadlock
    # was a DatabaseUnavailable already; what it must not do is mark them all broken.)
    assert db._broken_seen_at == -math.inf


def test_options_in_the_url_reach_the_pooled_connections_beside_the_statement_timeout(
    database_url: str,
) -> None:
    # What a provider's URL or a schema of its own may carry: options= in the URL.
    url = psycopg.conninfo.make_conninfo(
        database_url, options="-c search_path=pg_catalog,public -c statement_timeout=1000"
    )
    db = Database(url, min_size=0, max_size=1, statement_timeout_ms=4321)
    try:
        with db.autocommit() as session:
            search_path = session.conn.execute("SHOW search_path").fetchone()[0]
            statement_timeout = session.conn.execute("SHOW statement_timeout").fetchone()[0]
            idle_timeout = session.conn.execute(
                "SHOW idle_in_transaction_session_timeout"
            ).fetchone()[0]
    finally:
        db.close()

    assert search_path == "pg_catalog,public"
    assert statement_timeout == "4321ms"  # the setting wins over the URL's
    assert idle_timeout == "8642ms"


def test_a_transaction_left_idle_is_ended_by_the_server_and_its_locks_released(
    database_url: str,
) -> None:
    # A process frozen, or cut off, in the middle of a transaction that locked rows.
    db = Database(database_url, min_size=0, max_size=1, statement_timeout_ms=300)
    with psycopg.connect(database_url, autocommit=True) as other:
        [task_id] = other.execute(
            "INSERT INTO moderation_results (item_id) VALUES (1) RETURNING id"
        ).fetchone()
        try:
            with pytest.raises(DatabaseUnavailable), db.transaction() as tx:
                tx.conn.execute(
                    "SELECT id FROM moderation_results WHERE id = %s FOR UPDATE", (task_id,)
                )
                time.sleep(1.5)  # past twice the statement timeout, idle
                other.execute("SET statement_timeout = 5000")
                started = time.monotonic()
                other.execute(
                    "UPDATE moderation_results SET attempts = 1 WHERE id = %s", (task_id,)
                )
                waited_s = time.monotonic() - started
                tx.conn.execute("SELECT 1")  # the session is gone
        finally:
            db.close()

    assert waited_s < 1  # the lock went with the session, no statement timeout waited


def test_without_prepared_statements_nothing_is_prepared_on_the_server(settings) -> None:
    # Behind a pooler that hands each transaction another server connection, a statement
    # prepared on one connection is missing, or another client's, on the next.
    with wired_services(settings.model_copy(update={"db_prepared_statements": False})) as services:
        (item_id,) = seed_ads(services, 1)
        with services.db.transaction() as tx:
            task_id = tx.create_task_for_existing_ad(item_id)
        # Past psycopg's threshold and the blocking lookup's first use alike.
        for _ in range(pool.PSYCOPG_PREPARE_THRESHOLD * 2):
            with services.db.autocommit() as session:
                assert session.load_ad_with_seller(item_id) is not None
                assert session.get_task(task_id) is not None
        with services.db.autocommit() as session:
            prepared = session.conn.execute("SELECT name FROM pg_prepared_statements").fetchall()

    assert prepared == []


def test_with_prepared_statements_the_lookups_are_prepared(settings) -> None:
    # The default, which the test above turns off: it must be something to turn off.
    with wired_services(settings) as services:
        (item_id,) = seed_ads(services, 1)
        for _ in range(pool.PSYCOPG_PREPARE_THRESHOLD * 2):
            with services.db.autocommit() as session:
                assert session.load_ad_with_seller(item_id) is not None
        with services.db.autocommit() as session:
            prepared = session.conn.execute("SELECT name FROM pg_prepared_statements").fetchall()

    assert prepared != []


def test_a_statement_timeout_of_zero_leaves_the_roles_own_and_sends_no_options(
    database_url: str,
) -> None:
    # Behind PgBouncer, which refuses a connection with `options`, the timeout is set on
    # the role instead (README, Deployment).
    dbname = psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]
    with psycopg.connect(database_url, autocommit=True) as admin:
        role = admin.execute("SELECT current_user").fetchone()[0]
        set_on_role = psycopg.sql.SQL("ALTER ROLE {} IN DATABASE {} SET statement_timeout = {}")
        admin.execute(
            set_on_role.format(
                psycopg.sql.Identifier(role), psycopg.sql.Identifier(dbname), "1234ms"
            )
        )
        db = Database(database_url, min_size=0, max_size=1, statement_timeout_ms=0)
        try:
            with db.autocommit() as session:
                statement_timeout = session.conn.execute("SHOW statement_timeout").fetchone()[0]
                options = session.conn.info.get_parameters().get("options")
        finally:
            db.close()
            admin.execute(
                psycopg.sql.SQL("ALTER ROLE {} IN DATABASE {} RESET statement_timeout").format(
                    psycopg.sql.Identifier(role), psycopg.sql.Identifier(dbname)
                )
            )

    assert statement_timeout == "1234ms"
    assert options is None


def test_the_first_call_to_get_a_connection_after_an_outage_says_so_once(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="shared.db.pool")
    db = Database(database_url, min_size=0, max_size=1, connect_timeout_s=0.3)
    try:
        # A statement that ran out of time says nothing of the server being reachable.
        with pytest.raises(DatabaseUnavailable), db.autocommit() as session:
            session.conn.execute("SET statement_timeout = 50")
            session.conn.execute("SELECT pg_sleep(1)")
        with db.autocommit() as session:
            session.conn.execute("SET statement_timeout = 0")
        assert not _reachable_again(caplog)

        # No connection to be had in time: the outage as a call sees it.
        with db.autocommit(), pytest.raises(DatabaseUnavailable), db.autocommit():
            pass
        for _ in range(3):
            with db.autocommit() as session:
                session.conn.execute("SELECT 1")
    finally:
        db.close()

    [line] = _reachable_again(caplog)
    assert 0 <= line.unreachable_for_s < 5  # from the first failure a call saw


def _reachable_again(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == "PostgreSQL reachable again"]


def _with_wrong_password(database_url: str) -> str:
    params = conninfo_to_dict(database_url)
    params["password"] = f"wrong-{uuid.uuid4().hex}"
    return make_conninfo(**params)


def _ping_failure(url: str) -> str:
    """Why a readiness ping of a new pool on `url` fails."""
    db = Database(url, min_size=0, max_size=1)
    try:
        with pytest.raises(DatabaseUnavailable) as raised:
            db.ping(timeout_s=1.5)
    finally:
        db.close()
    return str(raised.value)


def test_a_call_that_gets_no_connection_names_why_the_last_connect_failed(
    database_url: str,
) -> None:
    # The pool's own timeout says only that no connection came in time; an operator
    # reading /readyz's log line or a consumer's retries must see the wrong password.
    reason = _ping_failure(_with_wrong_password(database_url))

    assert "couldn't get a connection" in reason
    assert "password authentication failed" in reason


def test_a_connect_failure_is_not_named_once_a_connect_has_succeeded_since(
    database_url: str,
) -> None:
    db = Database(database_url, min_size=0, max_size=1)
    connection_class = db._pool.connection_class
    with pytest.raises(psycopg.OperationalError):
        connection_class.connect(_with_wrong_password(database_url))
    named_after_failure = db._connect_failure_reason(psycopg_pool.PoolTimeout("none in time"))

    connection_class.connect(database_url).close()

    assert "password authentication failed" in named_after_failure
    assert db._connect_failure_reason(psycopg_pool.PoolTimeout("none in time")) == ""


def test_a_stale_connect_failure_is_not_named(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Failures from before the pool's last reconnect window say nothing about now.
    monkeypatch.setattr(pool, "CONNECT_FAILURE_NAMED_FOR_S", 0.0)
    reason = _ping_failure(_with_wrong_password(database_url))

    assert "couldn't get a connection" in reason
    assert "the last attempt to connect failed" not in reason


def test_pooled_connections_read_text_as_str_whatever_client_encoding_the_environment_sets(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With SQL_ASCII psycopg hands text columns over as bytes, which no ad validates as.
    monkeypatch.setenv("PGCLIENTENCODING", "SQL_ASCII")
    db = Database(database_url, min_size=0, max_size=1)
    try:
        with db.autocommit() as session:
            (text,) = session.conn.execute("SELECT 'Ёлка'::text").fetchone()
    finally:
        db.close()

    assert text == "Ёлка"
