"""The service through PgBouncer in transaction mode, as serverless set-ups often reach
PostgreSQL: with the settings README's Deployment gives for a pooler, every answer is
its own request's, though each transaction may get another server connection."""

from __future__ import annotations

import threading

import psycopg
import pytest

from shared.db.pool import PSYCOPG_PREPARE_THRESHOLD, one_shot_connection
from shared.db.retention import delete_finished_tasks
from shared.errors import DatabaseUnavailable
from shared.runner.demo_data import seed_demo_data
from shared.settings import Settings
from tests.integration.database_rows import seed_ads
from tests.integration.pgbouncer import pgbouncer
from tests.integration.wiring import wired_services

pytestmark = pytest.mark.integration

CLIENTS = 8
ROUNDS = 30
SERVER_CONNECTIONS = 2  # fewer than the clients: transactions change connections


def _behind_the_pooler(settings: Settings, url: str, **changes: object) -> Settings:
    return settings.model_copy(update={"database_url": url, "db_pool_max_size": CLIENTS, **changes})


def test_behind_pgbouncer_in_transaction_mode_every_answer_is_its_requests(
    settings, tmp_path
) -> None:
    with wired_services(settings) as direct:
        item_ids = seed_ads(direct, CLIENTS)
    mismatches: list[str] = []
    errors: list[BaseException] = []

    with (
        pgbouncer(
            settings.database_url,
            tmp_path,
            pool_mode="transaction",
            pool_size=SERVER_CONNECTIONS,
        ) as url,
        wired_services(
            _behind_the_pooler(
                settings, url, db_prepared_statements=False, db_statement_timeout_ms=0
            )
        ) as services,
    ):

        def client(item_id: int) -> None:
            try:
                # Past psycopg's prepare threshold, so a prepared statement would be tried.
                for _ in range(ROUNDS):
                    with services.db.transaction() as tx:
                        task_id = tx.create_task_for_existing_ad(item_id)
                    with services.db.autocommit() as session:
                        task = session.get_task(task_id)
                        ad = session.load_ad_with_seller(item_id)
                    if task is None or task.item_id != item_id or ad is None:
                        mismatches.append(f"task {task_id} of item {item_id}: {task}, {ad}")
                    elif ad.item_id != item_id:
                        mismatches.append(f"item {item_id} read as {ad.item_id}")
            except BaseException as error:  # reported below, with the rest
                errors.append(error)

        threads = [threading.Thread(target=client, args=(item_id,)) for item_id in item_ids]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
            if thread.is_alive():
                pytest.fail(f"a client still ran its {ROUNDS} rounds after 120 s")

    assert errors == []
    assert mismatches == []
    with wired_services(settings) as direct, direct.db.autocommit() as session:
        created = session.conn.execute("SELECT count(*) FROM moderation_results").fetchone()[0]
    assert created == CLIENTS * ROUNDS


def test_behind_pgbouncer_the_default_statement_timeout_is_refused_at_connect(
    settings, tmp_path, caplog
) -> None:
    # Why DB_STATEMENT_TIMEOUT_MS=0 goes with a pooler: it refuses the startup options
    # the timeout travels in (and so this really is a PgBouncer in front).
    with (
        pgbouncer(settings.database_url, tmp_path, pool_mode="transaction", pool_size=1) as url,
        wired_services(_behind_the_pooler(settings, url, db_connect_timeout_s=2)) as services,
        pytest.raises(DatabaseUnavailable),
    ):
        services.db.ping(timeout_s=2)

    logged = " ".join(record.getMessage() for record in caplog.records)
    # "...: options" up to PgBouncer 1.19; "... in options: statement_timeout" from 1.20.
    assert "unsupported startup parameter" in logged, logged


def test_the_operator_commands_and_the_demo_seeding_prepare_nothing_behind_pgbouncer(
    settings, tmp_path
) -> None:
    # One server connection: what a job leaves prepared there, the next one meets.
    with pgbouncer(settings.database_url, tmp_path, pool_mode="transaction", pool_size=1) as url:
        for _ in range(2):
            # As prune does, chunk after chunk: the same statement past psycopg's threshold.
            with one_shot_connection(url, connect_timeout_s=5) as conn:
                for _ in range(PSYCOPG_PREPARE_THRESHOLD * 2):
                    delete_finished_tasks(
                        conn, older_than_days=7, after_id=0, up_to_id=2**62, limit=1
                    )
        for _ in range(3):
            seed_demo_data(url)

        with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
            prepared = conn.execute("SELECT name FROM pg_prepared_statements").fetchall()

    assert prepared == []
