"""Idempotency keys' lifetime against a real PostgreSQL: a key names its task until the
expiry it was written with (IDEMPOTENCY_KEY_TTL_S on), then may name a new one, and the
relay deletes it (V0009)."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg
from functions_framework import create_app

from shared import metrics
from shared.db.idempotency_keys import (
    EXPIRED_KEY_KEPT_S,
    KeyedTask,
    create_keyed_task,
    delete_expired_idempotency_keys,
)
from shared.moderation.relay import relay_once
from tests.integration.database_rows import seed_ads
from tests.integration.kafka_records import records_on
from tests.integration.wiring import wired_services

DAY_S = 86_400.0


def _ads(conn: psycopg.Connection, count: int) -> list[int]:
    seller = conn.execute("INSERT INTO sellers (is_verified) VALUES (true) RETURNING id")
    seller_id = seller.fetchone()[0]
    rows = conn.execute(
        "INSERT INTO ads (seller_id, name, description, category, images_qty)"
        " SELECT %s, 'Bike', 'A bike', 1, 1 FROM generate_series(1, %s) RETURNING id",
        (seller_id, count),
    ).fetchall()
    return [row[0] for row in rows]


def _expire(conn: psycopg.Connection, key: str, *, days_ago: float = 1) -> None:
    conn.execute(
        "UPDATE idempotency_keys SET expires_at = now() - make_interval(days => %s) WHERE key = %s",
        (days_ago, key),
    )


def _keys(conn: psycopg.Connection) -> dict[str, int]:
    return dict(conn.execute("SELECT key, task_id FROM idempotency_keys").fetchall())


def _tasks(conn: psycopg.Connection) -> list[tuple[int, int]]:
    return conn.execute("SELECT id, item_id FROM moderation_results ORDER BY id").fetchall()


def _lifetimes(conn: psycopg.Connection) -> dict[str, float]:
    rows = conn.execute("SELECT key, expires_at - created_at FROM idempotency_keys")
    return {key: lifetime.total_seconds() for key, lifetime in rows}


def test_a_key_within_its_lifetime_names_its_task_and_an_expired_one_a_new_task(conn):
    [ad] = _ads(conn, 1)
    first = create_keyed_task(conn, ad, "k", key_ttl_s=DAY_S)
    replay = create_keyed_task(conn, ad, "k", key_ttl_s=DAY_S)
    _expire(conn, "k")

    after_expiry = create_keyed_task(conn, ad, "k", key_ttl_s=DAY_S)

    assert first == KeyedTask(first.task_id, ad, created=True)
    assert replay == KeyedTask(first.task_id, ad, created=False)
    assert after_expiry.created and after_expiry.task_id != first.task_id
    # The first task stays; the key now names the second, and its lifetime starts again.
    assert _tasks(conn) == [(first.task_id, ad), (after_expiry.task_id, ad)]
    assert _keys(conn) == {"k": after_expiry.task_id}
    assert create_keyed_task(conn, ad, "k", key_ttl_s=DAY_S).created is False


def test_a_key_gets_the_lifetime_its_writer_is_set_to_when_made_and_when_taken_over(conn):
    # Not a day, the column's default: a writer that left the column out would show.
    [ad] = _ads(conn, 1)
    create_keyed_task(conn, ad, "fresh", key_ttl_s=3600)
    create_keyed_task(conn, ad, "taken-over", key_ttl_s=3600)
    _expire(conn, "taken-over")
    create_keyed_task(conn, ad, "taken-over", key_ttl_s=90)

    assert _lifetimes(conn) == {"fresh": 3600, "taken-over": 90}


def test_an_expired_key_may_name_another_ad_and_names_nothing_for_a_missing_one(conn):
    [ad, other_ad] = _ads(conn, 2)
    first = create_keyed_task(conn, ad, "k", key_ttl_s=DAY_S)
    _expire(conn, "k")

    missing = create_keyed_task(conn, 10**9, "k", key_ttl_s=DAY_S)
    other = create_keyed_task(conn, other_ad, "k", key_ttl_s=DAY_S)

    # Expired, the key no longer holds the first ad's task: no 422 "used for another
    # ad", and no replay of that task for an ad that does not exist (a 404).
    assert missing is None
    assert other == KeyedTask(other.task_id, other_ad, created=True)
    assert _tasks(conn) == [(first.task_id, ad), (other.task_id, other_ad)]


def test_concurrent_requests_taking_over_one_expired_key_make_one_task(database_url, conn):
    [ad] = _ads(conn, 1)
    first = create_keyed_task(conn, ad, "k", key_ttl_s=DAY_S)
    _expire(conn, "k")

    def take_over(_: int) -> KeyedTask | None:
        with psycopg.connect(database_url, autocommit=True) as own:
            return create_keyed_task(own, ad, "k", key_ttl_s=DAY_S)

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(take_over, range(16)))

    made = [result for result in results if result.created]
    assert len(made) == 1
    assert {result.task_id for result in results} == {made[0].task_id}
    assert _tasks(conn) == [(first.task_id, ad), (made[0].task_id, ad)]


def test_deleting_expired_keys_takes_the_soonest_expired_first_and_leaves_their_tasks(conn):
    ads = _ads(conn, 5)
    for number, ad in enumerate(ads):
        create_keyed_task(conn, ad, f"k{number}", key_ttl_s=DAY_S)
    # k0 expired the longest ago; k4 still alive. Expired in the reverse order of their
    # rows, so that a DELETE taking rows as they lie would take the wrong ones.
    for number in reversed(range(4)):
        _expire(conn, f"k{number}", days_ago=4 - number)
    tasks_before = _tasks(conn)

    first = delete_expired_idempotency_keys(conn, limit=2)
    left_after_first = set(_keys(conn))
    second = delete_expired_idempotency_keys(conn, limit=2)
    third = delete_expired_idempotency_keys(conn, limit=2)

    assert (first, second, third) == (2, 2, 0)
    assert left_after_first == {"k2", "k3", "k4"}
    assert set(_keys(conn)) == {"k4"}
    assert _tasks(conn) == tasks_before


class _Explaining:
    """A connection whose statements are EXPLAINed instead of run: the plan of the
    statement our code sends, not of a copy of it."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn
        self.plan = ""

    def execute(self, sql: str, params: object) -> psycopg.Cursor:
        cursor = self.conn.execute(f"EXPLAIN {sql}", params)
        self.plan = "\n".join(row[0] for row in cursor)
        return cursor


def test_the_purge_finds_its_keys_by_expiry_and_deletes_them_by_primary_key(conn):
    # A table as a service keeps it, analysed: 100k live keys, 3,000 expired. With
    # `IN (...)` instead of `= ANY(ARRAY(...))` the planner hash-joins the expired keys
    # against a scan of the whole table.
    conn.execute(
        """
        WITH tasks AS (
            INSERT INTO moderation_results (item_id)
            SELECT 1 FROM generate_series(1, 103000) RETURNING id
        )
        INSERT INTO idempotency_keys (key, task_id, item_id, expires_at)
        SELECT 'key-' || id, id, 1,
               CASE WHEN id % 34 = 0 THEN now() - interval '1 hour'
                    ELSE now() + interval '1 day' END
        FROM tasks
        """
    )
    conn.execute("ANALYZE idempotency_keys")
    explaining = _Explaining(conn)

    delete_expired_idempotency_keys(explaining, limit=5000)  # type: ignore[arg-type]

    valid = conn.execute(
        "SELECT indisvalid FROM pg_index"
        " WHERE indexrelid = 'idempotency_keys_expires_at_idx'::regclass"
    ).fetchone()
    assert valid == (True,)
    plan = explaining.plan
    assert "idempotency_keys_expires_at_idx" in plan, plan
    assert "idempotency_keys_pkey" in plan and "Index Cond: (key = ANY" in plan, plan
    assert "Seq Scan" not in plan and "Hash" not in plan, plan


class _PausingBetweenStatements:
    """A connection that runs `between` after its first statement: what another session
    or the clock may do while a request is between the two statements of a keyed create."""

    def __init__(self, conn: psycopg.Connection, between) -> None:
        self.conn = conn
        self.between = between
        self.statements = 0

    def transaction(self):
        return self.conn.transaction()

    def execute(self, sql: str, params: object) -> psycopg.Cursor:
        cursor = self.conn.execute(sql, params)
        self.statements += 1
        if self.statements == 1:
            self.between()
        return cursor


def test_a_key_that_expires_while_a_retry_reads_it_is_still_a_replay(database_url, conn):
    # The retry found the key alive: it must get the key's task, not a 404 because the
    # key expired, and the relay deleted it, before the retry's second statement.
    [ad] = _ads(conn, 1)
    first = create_keyed_task(conn, ad, "k", key_ttl_s=DAY_S)
    # Long enough for the retry to begin while the key lives on a loaded machine.
    conn.execute("UPDATE idempotency_keys SET expires_at = now() + interval '1500 milliseconds'")
    deleted: list[int] = []

    def expire_and_purge() -> None:
        time.sleep(2.0)
        with psycopg.connect(database_url, autocommit=True) as relay:
            # Kept for no time after its expiry: only the retry's hold keeps it.
            deleted.append(delete_expired_idempotency_keys(relay, limit=10, kept_s=0))

    with psycopg.connect(database_url, autocommit=True) as request:
        retry = create_keyed_task(
            _PausingBetweenStatements(request, expire_and_purge),  # type: ignore[arg-type]
            ad,
            "k",
            key_ttl_s=DAY_S,
        )

    assert retry == KeyedTask(first.task_id, ad, created=False)
    assert deleted == [0]  # the key was held by the retry: skipped, not waited on
    _expire(conn, "k", days_ago=1)
    assert delete_expired_idempotency_keys(conn, limit=10) == 1  # and deleted once old


def test_a_request_that_began_while_its_key_lived_is_a_replay_though_the_key_expired_since(
    database_url, conn
):
    # A keyed create judges the key by its transaction's clock, read at BEGIN. A purge
    # between that BEGIN and the INSERT, after the key's expiry by the purge's own clock,
    # once let such a request make a second task inside the key's lifetime.
    [ad] = _ads(conn, 1)
    first = create_keyed_task(conn, ad, "k", key_ttl_s=DAY_S)

    with psycopg.connect(database_url, autocommit=True) as request, request.transaction():
        request.execute("SELECT now()")  # the request's clock, read while the key lives
        # The key expires after that clock by construction, however slow the machine.
        conn.execute("UPDATE idempotency_keys SET expires_at = now() + interval '300 milliseconds'")
        time.sleep(0.5)
        with psycopg.connect(database_url, autocommit=True) as relay:
            deleted = delete_expired_idempotency_keys(relay, limit=10)
        retry = create_keyed_task(request, ad, "k", key_ttl_s=DAY_S)

    assert deleted == 0  # expired moments ago: kept for EXPIRED_KEY_KEPT_S
    assert retry == KeyedTask(first.task_id, ad, created=False)
    assert _tasks(conn) == [(first.task_id, ad)]


def test_the_purge_keeps_a_key_for_a_while_after_its_expiry(conn):
    ads = _ads(conn, 2)
    create_keyed_task(conn, ads[0], "just-expired", key_ttl_s=DAY_S)
    create_keyed_task(conn, ads[1], "long-expired", key_ttl_s=DAY_S)
    conn.execute(
        "UPDATE idempotency_keys SET expires_at = now() - make_interval(secs => %s)"
        " WHERE key = 'just-expired'",
        (EXPIRED_KEY_KEPT_S - 5,),
    )
    conn.execute(
        "UPDATE idempotency_keys SET expires_at = now() - make_interval(secs => %s)"
        " WHERE key = 'long-expired'",
        (EXPIRED_KEY_KEPT_S + 5,),
    )

    assert delete_expired_idempotency_keys(conn, limit=10) == 1
    assert set(_keys(conn)) == {"just-expired"}


def test_the_relay_deletes_expired_keys_and_counts_them(settings):
    counted_before = metrics.EXPIRED_IDEMPOTENCY_KEYS._value.get()
    with wired_services(settings) as services, services.db.autocommit() as session:
        [old_ad, young_ad] = _ads(session.conn, 2)
        old_key, young_key = f"old-{uuid.uuid4()}", f"young-{uuid.uuid4()}"
        create_keyed_task(session.conn, old_ad, old_key, key_ttl_s=DAY_S)
        create_keyed_task(session.conn, young_ad, young_key, key_ttl_s=DAY_S)
        _expire(session.conn, old_key)

        relay_once(services)

        assert set(_keys(session.conn)) == {young_key}
        assert len(_tasks(session.conn)) == 2
    assert metrics.EXPIRED_IDEMPOTENCY_KEYS._value.get() - counted_before == 1


def test_async_predict_answers_a_key_past_its_lifetime_with_a_new_task_it_publishes(settings):
    key = {"Idempotency-Key": f"order-{uuid.uuid4()}"}
    with wired_services(settings) as services:
        [ad] = seed_ads(services, 1)
        client = create_app("async_predict", "functions/async_predict/main.py").test_client()
        first = client.post(f"/async_predict?item_id={ad}", headers=key)
        with services.db.autocommit() as session:
            _expire(session.conn, key["Idempotency-Key"])

        again = client.post(f"/async_predict?item_id={ad}", headers=key)

    assert (first.status_code, again.status_code) == (202, 202)
    assert "Idempotent-Replayed" not in again.headers
    assert again.get_json()["task_id"] != first.get_json()["task_id"]
    assert records_on(settings, settings.kafka_moderation_topic) == 2
