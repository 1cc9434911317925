"""The dead-letter outbox: DLQ records are written here first, then published.

A record lands in this table in the same transaction that fails its task, so a
crash can delay a DLQ publish but never lose it; the unique keys (source position
with the record's content, and task) make a redelivered record a no-op instead of a
second DLQ record, while another record at a position reused since (a topic made
again) still gets its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from psycopg.types.json import Jsonb


@dataclass(frozen=True, slots=True)
class DeadLetter:
    task_id: int | None  # only when the task exists
    source_topic: str
    source_partition: int
    source_offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class StoredDeadLetter:
    id: int
    letter: DeadLetter


def insert_dead_letters(
    conn: psycopg.Connection, letters: Sequence[DeadLetter]
) -> list[StoredDeadLetter]:
    """Insert the letters not recorded before; returns only the new ones."""
    stored = []
    for letter in letters:
        row = conn.execute(
            """
            INSERT INTO dead_letters (task_id, source_topic, source_partition, source_offset,
                                      record_key, record_value, headers)
            VALUES (%s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT DO NOTHING
            RETURNING id
            """,
            (
                letter.task_id,
                letter.source_topic,
                letter.source_partition,
                letter.source_offset,
                letter.key,
                letter.value,
                Jsonb(letter.headers),
            ),
        ).fetchone()
        if row:
            stored.append(StoredDeadLetter(row[0], letter))
    return stored


def mark_dead_letters_published(conn: psycopg.Connection, ids: Sequence[int]) -> None:
    conn.execute(
        "UPDATE dead_letters SET published_at = now() WHERE id = ANY(%s) AND published_at IS NULL",
        (list(ids),),
        prepare=False,
    )


def lock_unpublished_dead_letters(conn: psycopg.Connection, ids: Sequence[int]) -> list[int]:
    """Those of `ids` still unpublished and not being published by someone else."""
    rows = conn.execute(
        "SELECT id FROM dead_letters WHERE id = ANY(%s) AND published_at IS NULL"
        " FOR UPDATE SKIP LOCKED",
        (list(ids),),
        prepare=False,
    ).fetchall()
    return [row[0] for row in rows]


def claim_unpublished_dead_letters(
    conn: psycopg.Connection, *, older_than_s: float, limit: int
) -> list[StoredDeadLetter]:
    """Unpublished letters past the grace period, the least tried first (then the oldest):
    see `count_publish_tries`."""
    rows = conn.execute(
        """
        SELECT id, task_id, source_topic, source_partition, source_offset,
               record_key, record_value, headers
        FROM dead_letters
        WHERE published_at IS NULL AND created_at < now() - make_interval(secs => %s)
        ORDER BY publish_tries, id
        LIMIT %s
        FOR UPDATE SKIP LOCKED
        """,
        (older_than_s, limit),
    ).fetchall()
    return [StoredDeadLetter(row[0], DeadLetter(*row[1:])) for row in rows]


def count_publish_tries(conn: psycopg.Connection, ids: Sequence[int]) -> None:
    """One more failed publish of each letter: the next claims put it behind those tried
    less, so letters Kafka refuses for good never fill every sweep (migration V0004)."""
    if ids:
        conn.execute(
            "UPDATE dead_letters SET publish_tries = publish_tries + 1"
            " WHERE id = ANY(%s) AND published_at IS NULL",
            (list(ids),),
            prepare=False,
        )
