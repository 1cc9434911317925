"""The moderation_results table: tasks, their outcome, and their outbox state.

Status moves only forward (pending -> completed | failed): every UPDATE that
finishes a task says `AND status = 'pending'`, so a redelivered record can never
move a finished task back or overwrite its verdict. That guard is also what keeps
two consumers (the old and the new owner of a partition during a rebalance) from
both finishing a task: the second UPDATE waits for the first to commit, re-reads
the row and skips it. The finishing UPDATEs return the ids they changed, so the
caller knows which tasks are its own to count and to dead-letter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from operator import attrgetter
from typing import NamedTuple

import numpy as np
import psycopg
from psycopg.rows import class_row

from shared.db.ads import AD_COLUMNS
from shared.db.arrays import BinaryArray, bigint_array, boolean_array, float8_array
from shared.db.blocking import fetch_all
from shared.db.chunks import CHUNK_ROWS, Chunk, chunk_counted, every_chunk, id_span
from shared.db.outbox_backlog import MEASURED, OutboxBacklog
from shared.db.outbox_rows import STILL_UNPUBLISHED
from shared.domain import Ad, BatchVerdicts


@dataclass(frozen=True, slots=True)
class TaskRow:
    id: int
    item_id: int
    status: str
    is_violation: bool | None
    probability: float | None
    model_version: str | None
    error_message: str | None
    attempts: int
    created_at: datetime
    processed_at: datetime | None


class TaskForProcessing(NamedTuple):
    """A task as read for processing, with its ad (None when the ad is gone)."""

    id: int
    item_id: int
    status: str
    attempts: int
    first_failure_at: datetime | None
    ad: Ad | None


@dataclass(frozen=True, slots=True)
class TaskFailure:
    task_id: int
    reason: str
    attempts: int


def create_task_for_existing_ad(conn: psycopg.Connection, item_id: int) -> int | None:
    """Insert a pending task if the ad exists; None (and nothing written) if it does not."""
    row = conn.execute(
        """
        INSERT INTO moderation_results (item_id)
        SELECT id FROM ads WHERE id = %s
        RETURNING id
        """,
        (item_id,),
    ).fetchone()
    return row[0] if row else None


_MARK_PUBLISHED = (
    f"UPDATE moderation_results SET published_at = now() WHERE id = ANY(%s) AND {STILL_UNPUBLISHED}"
)


def mark_tasks_published(conn: psycopg.Connection, task_ids: Sequence[int]) -> None:
    conn.execute(_MARK_PUBLISHED, (list(task_ids),), prepare=False)


def republish_pending_tasks(
    conn: psycopg.Connection, *, published_before_s: float = 0, chunk_rows: int = CHUNK_ROWS
) -> int:
    """Hand every pending task published at least `published_before_s` ago back to the
    relay, as if its publish had never been acknowledged; returns how many. For a broker
    known to have lost records (the local runner's in-memory Kafka after a restart, a
    topic whose retention ran out before a consumer read it): a task whose record is
    gone would otherwise stay pending for good. A task that is still on a live topic is
    at worst published twice, which the consumer handles as a duplicate. It reads the
    whole table once (no index serves it: see migration V0002), a chunk at a time, so
    it is for rare use."""
    return every_chunk(
        lambda after, up_to, rows: _republish_chunk(
            conn, published_before_s, after_id=after, up_to_id=up_to, limit=rows
        ),
        ids=id_span(conn, "moderation_results"),
        rows=chunk_rows,
    )


def _republish_chunk(
    conn: psycopg.Connection,
    published_before_s: float,
    *,
    after_id: int,
    up_to_id: int,
    limit: int,
) -> Chunk:
    # Rows a consumer holds while it finishes them are skipped: they are being handled.
    return chunk_counted(
        conn.execute(
            """
            WITH handed_back AS (
                UPDATE moderation_results
                -- Its tries from before it was published say nothing of this broker's state.
                SET published_at = NULL, publish_tries = 0
                WHERE id = ANY(ARRAY(
                    SELECT id FROM moderation_results
                    WHERE id > %(after)s AND id <= %(up_to)s
                      AND status = 'pending' AND published_at IS NOT NULL
                      AND published_at <= now() - make_interval(secs => %(before)s)
                    ORDER BY id
                    LIMIT %(limit)s
                    FOR UPDATE SKIP LOCKED
                ))
                RETURNING id
            )
            SELECT count(*), coalesce(max(id), %(after)s) FROM handed_back
            """,
            {"after": after_id, "up_to": up_to_id, "before": published_before_s, "limit": limit},
        )
    )


def measure_unpublished_tasks(
    conn: psycopg.Connection, *, older_than_s: float, cap: int
) -> OutboxBacklog:
    """Pending tasks past the grace period that Kafka never acknowledged: what the relay
    has still to publish, counted up to `cap` (through the relay's own partial index),
    and the age of the oldest of those."""
    waiting = """
        SELECT created_at FROM moderation_results
        WHERE published_at IS NULL AND status = 'pending'
          AND created_at < now() - make_interval(secs => %s)
        LIMIT %s
    """
    row = conn.execute(MEASURED.format(waiting=waiting), (older_than_s, cap)).fetchone()
    return OutboxBacklog(*row)


def claim_unpublished_tasks(
    conn: psycopg.Connection, *, older_than_s: float, limit: int
) -> list[tuple[int, int]]:
    """(task_id, item_id) of pending tasks whose publish was never acknowledged, past
    the grace period, the least tried first (then the oldest): see `count_publish_tries`.

    SKIP LOCKED lets any number of relays sweep at once without publishing a
    task twice in the same sweep.
    """
    rows = conn.execute(
        """
        SELECT id, item_id FROM moderation_results
        WHERE published_at IS NULL AND status = 'pending'
          AND created_at < now() - make_interval(secs => %s)
        ORDER BY publish_tries, created_at
        LIMIT %s
        FOR UPDATE SKIP LOCKED
        """,
        (older_than_s, limit),
    ).fetchall()
    return [(row[0], row[1]) for row in rows]


def count_publish_tries(conn: psycopg.Connection, task_ids: Sequence[int]) -> None:
    """One more failed relay publish of each task: the next claims put it behind those
    tried less, so tasks of a partition Kafka cannot take hold back no other (V0007)."""
    if task_ids:
        conn.execute(_COUNT_PUBLISH_TRY, (list(task_ids),), prepare=False)


_COUNT_PUBLISH_TRY = (
    "UPDATE moderation_results SET publish_tries = publish_tries + 1"
    f" WHERE id = ANY(%s) AND {STILL_UNPUBLISHED}"
)


def get_task(conn: psycopg.Connection, task_id: int) -> TaskRow | None:
    with conn.cursor(row_factory=class_row(TaskRow)) as cursor:
        return cursor.execute(
            """
            SELECT id, item_id, status, is_violation, probability, model_version,
                   error_message, attempts, created_at, processed_at
            FROM moderation_results WHERE id = %s
            """,
            (task_id,),
        ).fetchone()


# The consumer's two statements per batch, run as one blocking call each (shared/db/blocking.py).
_TASKS_WITH_ADS = f"""
    SELECT t.id, t.item_id, t.status, t.attempts, t.first_failure_at, {AD_COLUMNS}
    FROM moderation_results t
    LEFT JOIN (ads a JOIN sellers s ON s.id = a.seller_id)
           ON a.id = t.item_id AND a.id = ANY($2)
    WHERE t.id = ANY($1)
"""
# The finishing UPDATEs below take a batch's ids sorted, and each row finds its own
# values in the parallel arrays by binary search (`width_bucket(id, ids)`: the count of
# ids <= its own, i.e. its position), instead of joining with `unnest` of the arrays.
# The join left the plan to the row estimate, and the estimate comes from statistics
# taken before the batch's tasks arrived: on a table of 150k+ mostly finished tasks
# PostgreSQL expected one pending row of the batch and chose a nested loop that
# rescanned all 500 values for each of the 500 rows, 45-50 ms a batch instead of ~3.5.
# Without a join, every plan is one index scan of the batch's rows.
_COMPLETE = """
    UPDATE moderation_results t
    SET status = 'completed',
        is_violation = ($3::boolean[])[width_bucket(t.id, $2)],
        probability = ($4::float8[])[width_bucket(t.id, $2)],
        model_version = $1,
        attempts = t.attempts + 1,
        error_message = NULL, processed_at = now(),
        -- Consumed, so evidently published: this also takes the row out of the
        -- relay's partial index if its publish was never marked.
        published_at = coalesce(t.published_at, now())
    WHERE t.id = ANY($2) AND t.status = 'pending'
    RETURNING t.id
"""
_FAIL = """
    UPDATE moderation_results t
    SET status = 'failed',
        error_message = (%(reasons)s::text[])[width_bucket(t.id, %(ids)s::bigint[])],
        -- Never below the row's own count: attempts counted in memory while the database
        -- was down may be fewer than an earlier owner of the task already recorded.
        attempts = greatest(
            t.attempts, (%(attempts)s::int[])[width_bucket(t.id, %(ids)s::bigint[])]
        ),
        first_failure_at = coalesce(t.first_failure_at, now()),
        last_failure_at = now(), processed_at = now(),
        published_at = coalesce(t.published_at, now())
    WHERE t.id = ANY(%(ids)s::bigint[]) AND t.status = 'pending'
    RETURNING t.id
"""


def load_tasks_with_ads(
    conn: psycopg.Connection, tasks: Sequence[tuple[int, int]]
) -> dict[int, TaskForProcessing]:
    """Each task of a batch with its ad and seller, in one statement.

    `tasks` are (task_id, item_id) as the records name them. Only ads some record of
    the batch names are read, so a task whose record names another item (a corrupt
    copy) may come back with `ad` None: the caller compares the row's item_id with the
    record's before anything else. That second array is what lets the planner find
    the ads by primary key; joined on the tasks' item_id alone, it reads the whole
    ads table for a batch.

    No row lock: the finishing UPDATEs' status guard settles a race (see the module
    docstring), and locking every row of a batch first cost a fifth of the
    consumer's throughput (bench/bench_consumer_throughput.py).
    """
    task_ids, item_ids = zip(*tasks, strict=True) if tasks else ((), ())
    rows = fetch_all(conn, _TASKS_WITH_ADS, (bigint_array(task_ids), bigint_array(item_ids)))
    return {
        row[0]: TaskForProcessing(
            row[0], row[1], row[2], row[3], row[4], None if row[5] is None else Ad._make(row[5:])
        )
        for row in rows
    }


def complete_tasks(
    conn: psycopg.Connection, task_ids: Sequence[int], verdicts: BatchVerdicts
) -> set[int]:
    """Write the verdicts (in the order of `task_ids`) of the tasks still pending, in one
    statement; returns the ids it changed. A task given twice gets its last verdict."""
    parameters = completion_parameters(task_ids, verdicts)  # checks the shapes first
    if not task_ids:
        return set()
    rows = fetch_all(conn, _COMPLETE, parameters)
    return {row[0] for row in rows}


def completion_parameters(
    task_ids: Sequence[int], verdicts: BatchVerdicts
) -> tuple[str, BinaryArray, BinaryArray, BinaryArray]:
    """`_COMPLETE`'s parameters: the ids sorted, as its binary search needs, and each
    verdict moved along with its id."""
    _check_shapes(task_ids, verdicts)
    # Raises OverflowError past the bigint range instead of wrapping.
    ids = np.fromiter(task_ids, dtype=np.int64, count=len(task_ids))
    # Stable: of two equal ids the one given last stays last, and the search finds it.
    order = np.argsort(ids, kind="stable")
    return (
        verdicts.model_version,
        bigint_array(ids[order]),
        boolean_array(verdicts.is_violation[order]),
        float8_array(verdicts.probability[order]),
    )


def _check_shapes(task_ids: Sequence[int], verdicts: BatchVerdicts) -> None:
    expected = (len(task_ids),)
    if not verdicts.is_violation.shape == verdicts.probability.shape == expected:
        # Arrays of other lengths would pair verdicts with the wrong tasks, or none.
        raise ValueError(
            f"{len(task_ids)} task ids for verdicts of shapes {verdicts.is_violation.shape}"
            f" and {verdicts.probability.shape}"
        )


def fail_tasks(conn: psycopg.Connection, failures: Sequence[TaskFailure]) -> set[int]:
    """Fail the tasks still pending; returns their ids. A task given twice gets the
    failure given last."""
    if not failures:
        return set()
    rows = conn.execute(_FAIL, failure_parameters(failures), prepare=False).fetchall()
    return {row[0] for row in rows}


def failed_attempt_parameters(tasks: Sequence[tuple[int, int]], reason: str) -> dict[str, object]:
    """`_COUNT_FAILED_ATTEMPT`'s parameters for (task_id, item_id) pairs."""
    return {
        "reason": reason,
        "ids": [task_id for task_id, _ in tasks],
        "keys": [f"{task_id}:{item_id}" for task_id, item_id in tasks],
    }


def failure_parameters(failures: Sequence[TaskFailure]) -> dict[str, list[object]]:
    """`_FAIL`'s parameters, sorted by task id as its binary search needs."""
    ordered = sorted(failures, key=attrgetter("task_id"))  # stable, as above
    return {
        # psycopg's own list dumpers, text included: this runs only when tasks fail.
        "ids": [failure.task_id for failure in ordered],
        "reasons": [failure.reason for failure in ordered],
        "attempts": [failure.attempts for failure in ordered],
    }


# Each task is matched by id and, as the records name it, by ad: a key of the two as text,
# which `= ANY` of a constant array hashes. A join with unnest of the pairs would be planned
# from statistics that predate the backlog, as `_COMPLETE`'s once was, and ran as a nested
# loop: 0.8 s for 5,000 tasks among 1M rows, and the statement timeout at 14,000.
_COUNT_FAILED_ATTEMPT = """
    UPDATE moderation_results
    SET attempts = attempts + 1, error_message = %(reason)s,
        first_failure_at = coalesce(first_failure_at, now()), last_failure_at = now()
    WHERE id = ANY(%(ids)s) AND status = 'pending'
      AND id::text || ':' || item_id::text = ANY(%(keys)s::text[])
    RETURNING id, attempts, first_failure_at,
        extract(epoch FROM clock_timestamp() - first_failure_at)::float8
"""


class FailedAttempts(NamedTuple):
    """A task's failed attempts so far, as its row keeps them."""

    count: int
    first_failure_at: datetime
    # Since the first failure, on the database's clock: the one clock every consumer
    # shares, so no two hosts' clocks are compared.
    failing_for_s: float


def record_failed_attempt(
    conn: psycopg.Connection, tasks: Sequence[tuple[int, int]], reason: str
) -> dict[int, FailedAttempts]:
    """Count one more failed attempt on each pending task, by task id.

    `tasks` are (task_id, item_id) as the records name them: a task is counted only when
    its row names the same ad, so a corrupt copy never counts against the real task. The
    count lives on the row so that a restart or a rebalance continues the retry schedule
    instead of starting it again.
    """
    rows = conn.execute(
        _COUNT_FAILED_ATTEMPT, failed_attempt_parameters(tasks, reason), prepare=False
    ).fetchall()
    return {row[0]: FailedAttempts._make(row[1:]) for row in rows}
