"""Whether the database holds what the service uses: the tables the migrations create,
with the privileges the service needs on them.

A readiness check asks, since a database never migrated, or a role that may not use
its tables, answers `SELECT 1` all the same, and every request then fails as a bug.
"""

from __future__ import annotations

import psycopg

# Every table a piece of the service reads or writes, with what it does there: the ads
# and sellers are read alone; tasks, keys and letters are made, finished and pruned.
REQUIRED_PRIVILEGES = {
    "ads": "SELECT",
    "sellers": "SELECT",
    "moderation_results": "SELECT, INSERT, UPDATE, DELETE",
    "idempotency_keys": "SELECT, INSERT, UPDATE, DELETE",
    "dead_letters": "SELECT, INSERT, UPDATE, DELETE",
}
# The tables whose rows the service numbers, from their id sequences.
NUMBERED = ("moderation_results", "dead_letters")


def unusable_tables(conn: psycopg.Connection) -> list[str]:
    """The required tables missing from the search path or lacking a privilege, and the
    id sequences the role may not draw from."""
    # to_regclass gives NULL for a missing table, and has_table_privilege NULL for it.
    rows = conn.execute(
        """
        SELECT name FROM unnest(%(names)s::text[], %(privileges)s::text[])
            AS wanted(name, privileges)
        WHERE NOT coalesce(has_table_privilege(to_regclass(name), privileges), false)
        UNION ALL
        SELECT name || '.id''s sequence' FROM unnest(%(numbered)s::text[]) AS numbered(name)
        WHERE to_regclass(name) IS NOT NULL
          AND NOT has_sequence_privilege(pg_get_serial_sequence(name, 'id'), 'USAGE')
        ORDER BY 1
        """,
        {
            "names": list(REQUIRED_PRIVILEGES),
            "privileges": list(REQUIRED_PRIVILEGES.values()),
            "numbered": list(NUMBERED),
        },
    ).fetchall()
    return [name for (name,) in rows]


def not_ready_reason(tables: list[str]) -> str:
    return (
        f"the database is not ready for the service: {', '.join(tables)} missing, or not"
        " usable by this role; apply the migrations (python -m shared.db.migrations), or"
        " grant the role SELECT on ads and sellers, SELECT, INSERT, UPDATE, DELETE on"
        " moderation_results, idempotency_keys and dead_letters, and USAGE on the id"
        " sequences of moderation_results and dead_letters"
    )
