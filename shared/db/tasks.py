"""The moderation_results table: tasks, their outcome, and their outbox state.

Status moves only forward (pending -> completed | failed): every UPDATE that
finishes a task says `AND status = 'pending'`, so a redelivered record can never
move a finished task back or overwrite its verdict.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg.rows import class_row

from shared.domain import Ad, Verdict


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


@dataclass(frozen=True, slots=True)
class TaskForProcessing:
    """A task, locked for this transaction, with its ad (None when the ad is gone)."""

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


def mark_tasks_published(conn: psycopg.Connection, task_ids: Sequence[int]) -> None:
    conn.execute(
        "UPDATE moderation_results SET published_at = now()"
        " WHERE id = ANY(%s) AND published_at IS NULL",
        (list(task_ids),),
    )


def claim_unpublished_tasks(
    conn: psycopg.Connection, *, older_than_s: float, limit: int
) -> list[tuple[int, int]]:
    """(task_id, item_id) of pending tasks whose publish was never acknowledged.

    SKIP LOCKED lets any number of relays sweep at once without publishing a
    task twice in the same sweep.
    """
    rows = conn.execute(
        """
        SELECT id, item_id FROM moderation_results
        WHERE published_at IS NULL AND status = 'pending'
          AND created_at < now() - make_interval(secs => %s)
        ORDER BY created_at
        LIMIT %s
        FOR UPDATE SKIP LOCKED
        """,
        (older_than_s, limit),
    ).fetchall()
    return [(row[0], row[1]) for row in rows]


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


def lock_tasks_with_ads(
    conn: psycopg.Connection, task_ids: Sequence[int]
) -> dict[int, TaskForProcessing]:
    """One query for a whole batch: each task, locked, with its ad and seller.

    The row lock keeps two consumers (say, the old and the new owner of a
    partition during a rebalance) from finishing the same task at once.
    """
    rows = conn.execute(
        """
        SELECT t.id, t.item_id, t.status, t.attempts, t.first_failure_at,
               a.id, a.seller_id, s.is_verified, a.name, a.description, a.category, a.images_qty
        FROM moderation_results t
        LEFT JOIN ads a ON a.id = t.item_id
        LEFT JOIN sellers s ON s.id = a.seller_id
        WHERE t.id = ANY(%s)
        ORDER BY t.id
        FOR UPDATE OF t
        """,
        (list(task_ids),),
    ).fetchall()
    tasks = {}
    for row in rows:
        ad = Ad(*row[5:]) if row[5] is not None else None
        tasks[row[0]] = TaskForProcessing(row[0], row[1], row[2], row[3], row[4], ad)
    return tasks


def complete_tasks(conn: psycopg.Connection, verdicts: Sequence[tuple[int, Verdict]]) -> int:
    """Write the verdicts of pending tasks in one statement; returns how many rows changed."""
    if not verdicts:
        return 0
    cursor = conn.execute(
        """
        UPDATE moderation_results t
        SET status = 'completed', is_violation = v.is_violation, probability = v.probability,
            model_version = v.model_version, attempts = t.attempts + 1,
            error_message = NULL, processed_at = now()
        FROM unnest(%s::bigint[], %s::boolean[], %s::float8[], %s::text[])
             AS v(id, is_violation, probability, model_version)
        WHERE t.id = v.id AND t.status = 'pending'
        """,
        (
            [task_id for task_id, _ in verdicts],
            [verdict.is_violation for _, verdict in verdicts],
            [verdict.probability for _, verdict in verdicts],
            [verdict.model_version for _, verdict in verdicts],
        ),
    )
    return cursor.rowcount


def fail_tasks(conn: psycopg.Connection, failures: Sequence[TaskFailure]) -> int:
    if not failures:
        return 0
    cursor = conn.execute(
        """
        UPDATE moderation_results t
        SET status = 'failed', error_message = f.reason, attempts = f.attempts,
            first_failure_at = coalesce(t.first_failure_at, now()),
            last_failure_at = now(), processed_at = now()
        FROM unnest(%s::bigint[], %s::text[], %s::int[]) AS f(id, reason, attempts)
        WHERE t.id = f.id AND t.status = 'pending'
        """,
        (
            [failure.task_id for failure in failures],
            [failure.reason for failure in failures],
            [failure.attempts for failure in failures],
        ),
    )
    return cursor.rowcount


def record_failed_attempt(
    conn: psycopg.Connection, task_ids: Sequence[int], reason: str
) -> dict[int, tuple[int, datetime]]:
    """Count one more failed attempt on each pending task: task_id -> (attempts, first failure).

    The count lives on the row so that a restart or a rebalance continues the
    retry schedule instead of starting it again.
    """
    rows = conn.execute(
        """
        UPDATE moderation_results
        SET attempts = attempts + 1, error_message = %s,
            first_failure_at = coalesce(first_failure_at, now()), last_failure_at = now()
        WHERE id = ANY(%s) AND status = 'pending'
        RETURNING id, attempts, first_failure_at
        """,
        (reason, list(task_ids)),
    ).fetchall()
    return {row[0]: (row[1], row[2]) for row in rows}
