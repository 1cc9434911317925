"""The outbox statements that name their rows by id (marking them published, counting a
failed publish, locking letters to publish) find those rows by primary key, even when the
table's statistics were taken while nothing waited and a backlog has built up since
(shared/db/outbox_rows.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from shared.db import dead_letters, tasks

PUBLISHED = 50_000  # the history the statistics saw, every row published
BACKLOG = 20_000  # what waits once Kafka has been down for a while
BATCH = 500


@pytest.fixture
def outbox_tables_of_their_own(conn: psycopg.Connection) -> Iterator[None]:
    """Both outbox tables in a schema of their own, dropped afterwards: an ANALYZE cannot
    be taken back, and its statistics must not steer later tests' plans."""
    schema = f"outbox_plans_{uuid.uuid4().hex[:8]}"
    conn.execute(f"CREATE SCHEMA {schema}")
    try:
        for table in ("moderation_results", "dead_letters"):
            conn.execute(f"CREATE TABLE {schema}.{table} (LIKE public.{table} INCLUDING ALL)")
        conn.execute(f"SET search_path = {schema}, public")
        yield
    finally:
        conn.execute("SET search_path = public")
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


def add_tasks(conn: psycopg.Connection, count: int, *, published: bool) -> list[int]:
    rows = conn.execute(
        "INSERT INTO moderation_results (item_id, published_at)"
        " SELECT 1 + n %% 100, CASE WHEN %s THEN now() END FROM generate_series(1, %s) AS n"
        " RETURNING id",
        (published, count),
    ).fetchall()
    return [row[0] for row in rows]


def add_letters(conn: psycopg.Connection, count: int, *, published: bool) -> list[int]:
    rows = conn.execute(
        "INSERT INTO dead_letters (source_topic, source_partition, source_offset, headers,"
        " published_at)"
        " SELECT 'moderation', 0, n, '{}'::jsonb, CASE WHEN %s THEN now() END"
        " FROM generate_series((SELECT coalesce(max(id), 0) + 1 FROM dead_letters),"
        "  (SELECT coalesce(max(id), 0) FROM dead_letters) + %s) AS n"
        " RETURNING id",
        (published, count),
    ).fetchall()
    return [row[0] for row in rows]


def how_rows_are_found(conn: psycopg.Connection, statement: str, ids: list[int]) -> dict:
    """The indexes the statement's plan read, the rows it found through them, and those
    it read and threw away, as EXPLAIN ANALYZE saw them (in a transaction rolled
    back, so that each statement sees the same backlog)."""
    with conn.transaction(force_rollback=True):
        [[plan]] = conn.execute(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + statement, (ids,), prepare=False
        ).fetchall()
    indexes: set[str] = set()
    found = removed = 0

    def walk(node: dict[str, Any]) -> None:
        nonlocal found, removed
        if "Index Name" in node:
            indexes.add(node["Index Name"])
            found += node["Actual Rows"]
        removed += node.get("Rows Removed by Filter", 0) + node.get(
            "Rows Removed by Index Recheck", 0
        )
        for child in node.get("Plans", []):
            walk(child)

    walk(plan[0]["Plan"])
    return {"indexes": indexes, "found": found, "removed": removed}


@pytest.mark.usefixtures("outbox_tables_of_their_own")
def test_rows_named_by_id_are_found_by_primary_key_after_a_backlog_built_up(
    conn: psycopg.Connection,
) -> None:
    add_tasks(conn, PUBLISHED, published=True)
    add_letters(conn, PUBLISHED, published=True)
    conn.execute("ANALYZE moderation_results")
    conn.execute("ANALYZE dead_letters")
    waiting_tasks = add_tasks(conn, BACKLOG, published=False)
    waiting_letters = add_letters(conn, BACKLOG, published=False)

    found = {
        "one task marked published": how_rows_are_found(
            conn, tasks._MARK_PUBLISHED, waiting_tasks[-1:]
        ),
        "a sweep's tasks marked published": how_rows_are_found(
            conn, tasks._MARK_PUBLISHED, waiting_tasks[-BATCH:]
        ),
        "a sweep's tasks counted as tried": how_rows_are_found(
            conn, tasks._COUNT_PUBLISH_TRY, waiting_tasks[-BATCH:]
        ),
        "letters marked published": how_rows_are_found(
            conn, dead_letters._MARK_PUBLISHED, waiting_letters[-BATCH:]
        ),
        "letters locked to publish": how_rows_are_found(
            conn, dead_letters._LOCK_UNPUBLISHED, waiting_letters[-BATCH:]
        ),
        "letters counted as tried": how_rows_are_found(
            conn, dead_letters._COUNT_PUBLISH_TRY, waiting_letters[-BATCH:]
        ),
    }

    for what, how in found.items():
        table = "dead_letters" if what.startswith("letters") else "moderation_results"
        expected_rows = 1 if what.startswith("one") else BATCH
        assert how == {"indexes": {f"{table}_pkey"}, "found": expected_rows, "removed": 0}, what
