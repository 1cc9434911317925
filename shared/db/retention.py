"""Deleting what the service no longer needs: finished tasks and published dead letters
older than a cutoff, in bounded chunks. Nothing calls this on its own; the `prune`
command does (shared/moderation/prune.py), when an operator wants history trimmed."""

from __future__ import annotations

import psycopg

from shared.db.chunks import Chunk, chunk_counted
from shared.db.idempotency_keys import EXPIRED_KEY_KEPT_S

SECONDS_A_DAY = 86_400


def delete_finished_tasks(
    conn: psycopg.Connection, *, older_than_days: float, after_id: int, up_to_id: int, limit: int
) -> Chunk:
    """Delete up to `limit` tasks of ids after `after_id` up to `up_to_id` finished
    (completed or failed) over `older_than_days` ago, with their expired idempotency keys
    and published dead letters.

    Kept: a task a key still names, or named until it expired within EXPIRED_KEY_KEPT_S
    of now (a retry judges its key by when its transaction began, as the relay's purge
    allows for; a key taken over names its new task, and the old one is not kept for that
    minute), and one whose dead letter is still to be published (the relay needs both
    rows)."""
    # The keys and letters go in the same statement as their tasks: their foreign keys are
    # checked at its end. `= ANY(ARRAY(...))` finds them through their indexes whatever
    # the statistics say. Rows another transaction holds are skipped, not waited on.
    return chunk_counted(
        conn.execute(
            """
            WITH doomed AS (
                SELECT t.id FROM moderation_results t
                WHERE t.id > %(after)s AND t.id <= %(up_to)s
                  AND t.status <> 'pending'
                  AND t.processed_at < now() - make_interval(secs => %(seconds)s)
                  AND NOT EXISTS (
                      SELECT 1 FROM idempotency_keys k
                      WHERE k.task_id = t.id
                        AND k.expires_at > now() - make_interval(secs => %(key_kept_s)s))
                  AND NOT EXISTS (SELECT 1 FROM dead_letters d
                                  WHERE d.task_id = t.id AND d.published_at IS NULL)
                ORDER BY t.id
                LIMIT %(limit)s
                FOR UPDATE SKIP LOCKED
            ),
            keys AS (
                DELETE FROM idempotency_keys WHERE task_id = ANY(ARRAY(SELECT id FROM doomed))
            ),
            letters AS (
                DELETE FROM dead_letters WHERE task_id = ANY(ARRAY(SELECT id FROM doomed))
            ),
            deleted AS (
                DELETE FROM moderation_results WHERE id = ANY(ARRAY(SELECT id FROM doomed))
                RETURNING id
            )
            SELECT count(*), coalesce(max(id), %(after)s) FROM deleted
            """,
            {
                "after": after_id,
                "up_to": up_to_id,
                "seconds": older_than_days * SECONDS_A_DAY,
                "key_kept_s": EXPIRED_KEY_KEPT_S,
                "limit": limit,
            },
        )
    )


def delete_published_letters_of_no_task(
    conn: psycopg.Connection, *, older_than_days: float, after_id: int, up_to_id: int, limit: int
) -> Chunk:
    """Delete up to `limit` dead letters of ids after `after_id` up to `up_to_id`, of
    records that named no task (malformed ones), published over `older_than_days` ago."""
    return chunk_counted(
        conn.execute(
            """
            WITH deleted AS (
                DELETE FROM dead_letters WHERE id = ANY(ARRAY(
                    SELECT id FROM dead_letters
                    WHERE id > %(after)s AND id <= %(up_to)s
                      AND task_id IS NULL
                      AND published_at < now() - make_interval(secs => %(seconds)s)
                    ORDER BY id
                    LIMIT %(limit)s
                    FOR UPDATE SKIP LOCKED
                ))
                RETURNING id
            )
            SELECT count(*), coalesce(max(id), %(after)s) FROM deleted
            """,
            {
                "after": after_id,
                "up_to": up_to_id,
                "seconds": older_than_days * SECONDS_A_DAY,
                "limit": limit,
            },
        )
    )
