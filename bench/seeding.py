"""Rows for the benches: tables reset, ads and tasks seeded, tasks put on Kafka."""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from confluent_kafka import Producer

from shared.kafka.config import connection_config
from shared.kafka.envelope import encode_task_message
from shared.settings import Settings

TABLES = "ads, sellers, moderation_results, dead_letters"
AD_TEMPLATES = 2_000


def connect(database_url: str) -> psycopg.Connection:
    return psycopg.connect(database_url, autocommit=True, connect_timeout=10)


def reset_tables(database_url: str) -> None:
    with connect(database_url) as conn:
        conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")


def reset_tasks(database_url: str) -> None:
    """No tasks (nor dead letters) left; the ads stay."""
    with connect(database_url) as conn:
        conn.execute("TRUNCATE moderation_results, dead_letters RESTART IDENTITY CASCADE")


def seed_ads(database_url: str, count: int) -> None:
    """Grow `ads` to `count` rows (ids 1..count) of synthetic ads, one seller per ten ads."""
    from shared.model.synthetic import generate_ads

    templates = generate_ads(AD_TEMPLATES).ads
    with connect(database_url) as conn:
        have = conn.execute("SELECT count(*) FROM ads").fetchone()[0]
        if have >= count:
            return
        sellers = conn.execute("SELECT count(*) FROM sellers").fetchone()[0]
        wanted_sellers = count // 10 + 1
        conn.execute(
            "INSERT INTO sellers (is_verified)"
            " SELECT n %% 3 <> 0 FROM generate_series(%s::bigint, %s::bigint) AS n",
            (sellers + 1, wanted_sellers),
        )
        conn.execute(
            "CREATE TEMP TABLE ad_templates"
            " (k int PRIMARY KEY, name text, description text, category int, images_qty int)"
        )
        with conn.cursor().copy("COPY ad_templates FROM STDIN") as copy:
            for k, ad in enumerate(templates):
                copy.write_row((k, ad.name, ad.description, ad.category, ad.images_qty))
        conn.execute(
            """
            INSERT INTO ads (seller_id, name, description, category, images_qty)
            SELECT 1 + n %% %(sellers)s, t.name, t.description, t.category, t.images_qty
            FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS n
            JOIN ad_templates t ON t.k = n %% %(templates)s
            ORDER BY n
            """,
            {
                "sellers": wanted_sellers,
                "first": have + 1,
                "last": count,
                "templates": len(templates),
            },
        )
        conn.execute("VACUUM ANALYZE ads")
        conn.execute("VACUUM ANALYZE sellers")


def seed_completed_tasks(database_url: str, count: int, ads: int) -> None:
    """Add `count` finished tasks (moderation history) spread over ads 1..`ads`."""
    with connect(database_url) as conn:
        conn.execute(
            """
            INSERT INTO moderation_results (item_id, status, is_violation, probability,
                model_version, attempts, published_at, processed_at)
            SELECT 1 + (n * 7919) %% %s, 'completed', false, 0.1, 'bench', 1, now(), now()
            FROM generate_series(1, %s::bigint) AS n
            """,
            (ads, count),
        )
        conn.execute("VACUUM ANALYZE moderation_results")


def seed_pending_tasks(database_url: str, count: int, ads: int) -> list[tuple[int, int]]:
    """Add `count` pending, published tasks on ads spread over 1..`ads`; (task_id, item_id)."""
    with connect(database_url) as conn:
        rows = conn.execute(
            """
            INSERT INTO moderation_results (item_id, published_at)
            SELECT 1 + (n * 104729) %% %s, now() FROM generate_series(1, %s::bigint) AS n
            RETURNING id, item_id
            """,
            (ads, count),
        ).fetchall()
    # Not analysed afterwards: a backlog arrives after the table's last ANALYZE, whose
    # statistics then know of no pending task, and the consumer has to cope with that
    # (an ANALYZE here hid a plan 13x slower at 1M rows; shared/db/tasks.py, _COMPLETE).
    return [(row[0], row[1]) for row in rows]


def delete_tasks(database_url: str, task_ids: Sequence[int]) -> None:
    with connect(database_url) as conn:
        conn.execute("DELETE FROM dead_letters WHERE task_id = ANY(%s)", (list(task_ids),))
        conn.execute("DELETE FROM moderation_results WHERE id = ANY(%s)", (list(task_ids),))


def vacuum(database_url: str, table: str) -> None:
    with connect(database_url) as conn:
        conn.execute(f"VACUUM ANALYZE {table}")


def count_by_status(database_url: str, task_ids: Sequence[int]) -> dict[str, int]:
    with connect(database_url) as conn:
        rows = conn.execute(
            "SELECT status, count(*) FROM moderation_results WHERE id = ANY(%s) GROUP BY status",
            (list(task_ids),),
        ).fetchall()
    return {status: count for status, count in rows}


def produce_tasks(settings: Settings, tasks: Sequence[tuple[int, int]]) -> None:
    """Publish one task message per (task_id, item_id), keyed by item_id like the service."""
    producer = Producer(
        {
            **connection_config(settings),
            "linger.ms": 20,
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": 1_000_000,
        }
    )
    for task_id, item_id in tasks:
        key, value = encode_task_message(task_id, item_id)
        producer.produce(settings.kafka_moderation_topic, key=key, value=value)
        producer.poll(0)
    remaining = producer.flush(60)
    if remaining:
        raise RuntimeError(f"{remaining} of {len(tasks)} task records not delivered in 60 s")
