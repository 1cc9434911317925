"""The idempotency_keys table: an `Idempotency-Key` names the task its first request made,
until the key expires; the relay deletes expired keys (V0005, V0009)."""

from __future__ import annotations

from typing import NamedTuple

import psycopg


class KeyedTask(NamedTuple):
    task_id: int
    item_id: int
    created: bool  # False: an earlier request made it under the same key


def create_keyed_task(
    conn: psycopg.Connection, item_id: int, key: str, *, key_ttl_s: float
) -> KeyedTask | None:
    """The task made under `key`: inserted now if the ad exists and no task has the key
    yet, or only an expired one, else the one an earlier request made (for whichever
    ad). None if neither. A key made now expires `key_ttl_s` from now."""
    # The key is claimed first, with the task's id drawn ahead, and the task inserted
    # only if the claim went in: a request racing this one under the same key waits on
    # the key's row, and finds it taken once this one commits. An expired key is taken
    # over the same way; the racer then re-reads the row, finds it alive, and leaves it.
    #
    # One transaction for both statements, so that they share `now()` (a key alive for
    # the first is alive for the second) and the row lock ON CONFLICT takes even when it
    # updates nothing is held until the second has read the row: the relay skips a
    # locked key, so it cannot delete it in between (a 404 for an ad that exists).
    with conn.transaction():
        inserted = conn.execute(
            """
            WITH claimed AS (
                INSERT INTO idempotency_keys (key, task_id, item_id, expires_at)
                SELECT %(key)s, nextval(pg_get_serial_sequence('moderation_results', 'id')),
                       a.id, now() + make_interval(secs => %(ttl)s)
                FROM ads a WHERE a.id = %(item_id)s
                ON CONFLICT (key) DO UPDATE
                    SET task_id = EXCLUDED.task_id, item_id = EXCLUDED.item_id,
                        created_at = now(), expires_at = EXCLUDED.expires_at
                    WHERE idempotency_keys.expires_at <= now()
                RETURNING task_id, item_id
            )
            INSERT INTO moderation_results (id, item_id)
            SELECT task_id, item_id FROM claimed
            RETURNING id
            """,
            {"key": key, "item_id": item_id, "ttl": key_ttl_s},
        ).fetchone()
        if inserted is not None:
            return KeyedTask(inserted[0], item_id, created=True)
        # A statement of its own, so a snapshot of its own (read committed): the request
        # that took the key may have committed after the INSERT's snapshot was taken (the
        # INSERT waited for that commit, then did nothing), and only a later snapshot sees
        # its row. An expired key found here (the ad is gone, so nothing took the key
        # over) names no task any more.
        earlier = conn.execute(
            "SELECT task_id, item_id FROM idempotency_keys WHERE key = %s AND expires_at > now()",
            (key,),
        ).fetchone()
    return None if earlier is None else KeyedTask(earlier[0], earlier[1], created=False)


# How long past its expiry a key is kept. A keyed create judges the key by its own
# transaction's `now()`, taken at BEGIN; a key deleted between that BEGIN and the INSERT
# (the purge runs on its own, later clock) would let a request that began within the
# key's lifetime make a second task. Kept this long, an expired key is only ever taken
# over by the create itself, under the key's row lock and by the request's clock.
EXPIRED_KEY_KEPT_S = 60


def delete_expired_idempotency_keys(
    conn: psycopg.Connection, *, limit: int, kept_s: float = EXPIRED_KEY_KEPT_S
) -> int:
    """Delete up to `limit` keys expired at least `kept_s` ago, the soonest expired first
    (V0009); returns how many. A key a request holds right now (taking it over, or
    reading it) is skipped, not waited on."""
    # `= ANY(ARRAY(...))` rather than `IN (...)`: the keys are then found through the
    # primary key whatever the statistics say, where the planner may hash-join `IN`
    # against a scan of the whole table.
    return conn.execute(
        """
        DELETE FROM idempotency_keys WHERE key = ANY(ARRAY(
            SELECT key FROM idempotency_keys
            WHERE expires_at <= now() - make_interval(secs => %s)
            ORDER BY expires_at
            LIMIT %s
            FOR UPDATE SKIP LOCKED
        ))
        """,
        (kept_s, limit),
    ).rowcount
