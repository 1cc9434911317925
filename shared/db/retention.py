"""Deleting what the service no longer needs: finished tasks and published dead letters
older than a cutoff, in bounded chunks. Nothing calls this on its own; the `prune`
command does (shared/moderation/prune.py), when an operator wants history trimmed."""

from __future__ import annotations

import psycopg

# Rows per statement: each chunk is its own short transaction, so the consumer's and the
# relay's statements never wait long behind one.
PRUNE_CHUNK = 5000
SECONDS_A_DAY = 86_400


def delete_finished_tasks(conn: psycopg.Connection, *, older_than_days: float) -> int:
    """Delete up to PRUNE_CHUNK tasks finished (completed or failed) over `older_than_days`
    ago, with their expired idempotency keys and published dead letters; returns how many.

    Kept: a task a live key still names (a retry with the key must get its task back) and
    one whose dead letter is still to be published (the relay needs both rows)."""
    # The keys and letters go in the same statement as their tasks: their foreign keys are
    # checked at its end. Rows another transaction holds are skipped, not waited on.
    return conn.execute(
        """
        WITH doomed AS (
            SELECT t.id FROM moderation_results t
            WHERE t.status <> 'pending'
              AND t.processed_at < now() - make_interval(secs => %(seconds)s)
              AND NOT EXISTS (SELECT 1 FROM idempotency_keys k
                              WHERE k.task_id = t.id AND k.expires_at > now())
              AND NOT EXISTS (SELECT 1 FROM dead_letters d
                              WHERE d.task_id = t.id AND d.published_at IS NULL)
            ORDER BY t.id
            LIMIT %(limit)s
            FOR UPDATE SKIP LOCKED
        ),
        keys AS (DELETE FROM idempotency_keys k USING doomed WHERE k.task_id = doomed.id),
        letters AS (DELETE FROM dead_letters d USING doomed WHERE d.task_id = doomed.id)
        DELETE FROM moderation_results t USING doomed WHERE t.id = doomed.id
        """,
        {"seconds": older_than_days * SECONDS_A_DAY, "limit": PRUNE_CHUNK},
    ).rowcount


def delete_published_letters_of_no_task(conn: psycopg.Connection, *, older_than_days: float) -> int:
    """Delete up to PRUNE_CHUNK dead letters of records that named no task (malformed ones),
    published over `older_than_days` ago; returns how many."""
    return conn.execute(
        """
        DELETE FROM dead_letters WHERE id = ANY(ARRAY(
            SELECT id FROM dead_letters
            WHERE task_id IS NULL
              AND published_at < now() - make_interval(secs => %(seconds)s)
            ORDER BY id
            LIMIT %(limit)s
            FOR UPDATE SKIP LOCKED
        ))
        """,
        {"seconds": older_than_days * SECONDS_A_DAY, "limit": PRUNE_CHUNK},
    ).rowcount
