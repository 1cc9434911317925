"""The dead-letter outbox: DLQ records are written here first, then published.

A record lands in this table in the same transaction that fails its task, so a
crash can delay a DLQ publish but never lose it; the unique keys (source position
with the record's content, and task) make a redelivered record a no-op instead of a
second DLQ record, while another record at a position reused since (a topic made
again) still gets its own.
"""

from __future__ import annotations

from base64 import b64decode, b64encode
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import psycopg
from psycopg.types.json import Jsonb

from shared.db.outbox_backlog import MEASURED, OutboxBacklog
from shared.db.outbox_rows import STILL_UNPUBLISHED


@dataclass(frozen=True, slots=True)
class DeadLetter:
    task_id: int | None  # only when the task exists
    source_topic: str
    source_partition: int
    source_offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]  # ours: why and where (`x-error-class`, `x-source-offset`, ...)
    # The record's own headers, as it came (V0011).
    source_headers: tuple[tuple[str, bytes], ...] = ()


def _stored_headers(headers: Sequence[tuple[str, bytes]]) -> Jsonb:
    """Header pairs as JSONB: [name, value], both base64 (V0011)."""
    return Jsonb(
        [[b64encode(name.encode()).decode(), b64encode(value).decode()] for name, value in headers]
    )


def _read_headers(stored: Sequence[Sequence[str]]) -> tuple[tuple[str, bytes], ...]:
    return tuple((b64decode(name).decode(), b64decode(value)) for name, value in stored)


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
                                      record_key, record_value, headers, source_headers)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
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
                _stored_headers(letter.source_headers),
            ),
        ).fetchone()
        if row:
            stored.append(StoredDeadLetter(row[0], letter))
    return stored


_MARK_PUBLISHED = (
    f"UPDATE dead_letters SET published_at = now() WHERE id = ANY(%s) AND {STILL_UNPUBLISHED}"
)


def mark_dead_letters_published(conn: psycopg.Connection, ids: Sequence[int]) -> None:
    conn.execute(_MARK_PUBLISHED, (list(ids),), prepare=False)


_LOCK_UNPUBLISHED = (
    f"SELECT id FROM dead_letters WHERE id = ANY(%s) AND {STILL_UNPUBLISHED} FOR UPDATE SKIP LOCKED"
)


def lock_unpublished_dead_letters(conn: psycopg.Connection, ids: Sequence[int]) -> list[int]:
    """Those of `ids` still unpublished and not being published by someone else."""
    rows = conn.execute(_LOCK_UNPUBLISHED, (list(ids),), prepare=False).fetchall()
    return [row[0] for row in rows]


# What one claim may read of letters' records (keys, values, headers). A letter holds its
# record whole, up to the topic's 1 MiB, so a sweep's 500 could be 500 MiB read, held and
# sent at once, and again every sweep while the DLQ refuses them (a topic whose
# max.message.bytes is too small, say): enough to get a memory-capped relay killed, or
# its claim timed out.
MAX_BYTES_PER_CLAIM = 16 * 1024 * 1024


class LetterClaim(NamedTuple):
    letters: list[StoredDeadLetter]
    # The claim took all it could (`limit` letters, or `max_bytes`): more may be waiting.
    full: bool


def measure_unpublished_dead_letters(
    conn: psycopg.Connection, *, older_than_s: float, cap: int
) -> OutboxBacklog:
    """Letters past the grace period not yet on the DLQ topic, counted up to `cap`, and
    the age of the oldest of those."""
    waiting = """
        SELECT created_at FROM dead_letters
        WHERE published_at IS NULL AND created_at < now() - make_interval(secs => %s)
        LIMIT %s
    """
    row = conn.execute(MEASURED.format(waiting=waiting), (older_than_s, cap)).fetchone()
    return OutboxBacklog(*row)


def claim_unpublished_dead_letters(
    conn: psycopg.Connection,
    *,
    older_than_s: float,
    limit: int,
    max_bytes: int = MAX_BYTES_PER_CLAIM,
) -> LetterClaim:
    """Unpublished letters past the grace period, the least tried first (then the oldest):
    see `count_publish_tries`. At most `limit` of them, and as many of those as fit in
    `max_bytes` of keys, values and the records' own headers (one at least, whatever
    its size)."""
    sizes = conn.execute(
        """
        SELECT id, coalesce(octet_length(record_key), 0) + coalesce(octet_length(record_value), 0)
                   + octet_length(source_headers::text)
        FROM dead_letters
        WHERE published_at IS NULL AND created_at < now() - make_interval(secs => %s)
        ORDER BY publish_tries, id
        LIMIT %s
        FOR UPDATE SKIP LOCKED
        """,
        (older_than_s, limit),
    ).fetchall()
    ids = _within_bytes(sizes, max_bytes)
    full = len(sizes) >= limit or len(ids) < len(sizes)
    if not ids:
        return LetterClaim([], full)
    # Those left out stay locked until the sweep commits, and are claimed by a later one.
    rows = conn.execute(
        """
        SELECT id, task_id, source_topic, source_partition, source_offset,
               record_key, record_value, headers, source_headers
        FROM dead_letters WHERE id = ANY(%s)
        ORDER BY publish_tries, id
        """,
        (ids,),
        prepare=False,
    ).fetchall()
    letters = [
        StoredDeadLetter(row[0], DeadLetter(*row[1:8], _read_headers(row[8]))) for row in rows
    ]
    return LetterClaim(letters, full)


def _within_bytes(sizes: Sequence[tuple[int, int]], max_bytes: int) -> list[int]:
    """The ids of the longest run from the first whose sizes add up to `max_bytes` at
    most, and the first alone when it is larger."""
    ids: list[int] = []
    total = 0
    for letter_id, size in sizes:
        total += size
        if ids and total > max_bytes:
            break
        ids.append(letter_id)
    return ids


def count_publish_tries(conn: psycopg.Connection, ids: Sequence[int]) -> None:
    """One more failed publish of each letter: the next claims put it behind those tried
    less, so letters Kafka refuses for good never fill every sweep (migration V0004)."""
    if ids:
        conn.execute(_COUNT_PUBLISH_TRY, (list(ids),), prepare=False)


_COUNT_PUBLISH_TRY = (
    "UPDATE dead_letters SET publish_tries = publish_tries + 1"
    f" WHERE id = ANY(%s) AND {STILL_UNPUBLISHED}"
)
