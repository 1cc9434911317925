"""Whether the database holds what the service uses: the tables the migrations create,
with their columns and the privileges the service needs on them.

A readiness check asks, since a database never migrated, migrated only part of the way,
or a role that may not use its tables, answers `SELECT 1` all the same, and every
request then fails as a bug.
"""

from __future__ import annotations

import psycopg

# Every table a piece of the service reads or writes, with what it does there: the ads
# and sellers are read alone; tasks, keys and letters are made, finished and pruned.
_READ = ("SELECT",)
_WRITTEN = ("SELECT", "INSERT", "UPDATE", "DELETE")
REQUIRED_PRIVILEGES = {
    "ads": _READ,
    "sellers": _READ,
    "moderation_results": _WRITTEN,
    "idempotency_keys": _WRITTEN,
    "dead_letters": _WRITTEN,
}
# The tables whose rows the service numbers from their id sequences.
NUMBERED = ("moderation_results", "dead_letters")
# Every column of those tables as the newest migration leaves them. A release deployed
# before its migrations ran (the order the README's deployment gives is the other way)
# would otherwise pass as ready and fail the statements that name a new column; a test
# holds this list to the migrated schema, so a migration that adds a column adds it here.
REQUIRED_COLUMNS = {
    "ads": ("id", "seller_id", "name", "description", "category", "images_qty", "created_at"),
    "sellers": ("id", "is_verified", "created_at"),
    "moderation_results": (
        "id",
        "item_id",
        "status",
        "is_violation",
        "probability",
        "model_version",
        "error_message",
        "attempts",
        "first_failure_at",
        "last_failure_at",
        "created_at",
        "published_at",
        "processed_at",
        "publish_tries",
    ),
    "idempotency_keys": ("key", "task_id", "item_id", "created_at", "expires_at"),
    "dead_letters": (
        "id",
        "task_id",
        "source_topic",
        "source_partition",
        "source_offset",
        "record_key",
        "record_value",
        "headers",
        "created_at",
        "published_at",
        "publish_tries",
        "source_headers",
    ),
}


def unusable_tables(conn: psycopg.Connection) -> list[str]:
    """The required tables missing from the search path or lacking a privilege, the
    columns missing from the tables found, and the id sequences the role may not draw
    from."""
    wanted = [(table, p) for table, privileges in REQUIRED_PRIVILEGES.items() for p in privileges]
    columns = [(table, c) for table, names in REQUIRED_COLUMNS.items() for c in names]
    # One privilege a call: given a list, has_table_privilege answers whether the role
    # holds any of them. It gives NULL for a table to_regclass does not find. nextval
    # takes USAGE or UPDATE on the sequence; a table of ours has an id column, but one of
    # the same name earlier on the search path may not, where pg_get_serial_sequence
    # would raise, so CASE asks first; a sequence no longer owned by its column cannot
    # be found, and is not held against the role.
    rows = conn.execute(
        """
        SELECT name FROM unnest(%(names)s::text[], %(privileges)s::text[])
            AS wanted(name, privilege)
        GROUP BY name
        HAVING NOT bool_and(coalesce(has_table_privilege(to_regclass(name), privilege), false))
        UNION ALL
        SELECT name || '.id''s sequence' FROM unnest(%(numbered)s::text[]) AS numbered(name)
        WHERE CASE
            WHEN to_regclass(name) IS NULL THEN false
            WHEN NOT EXISTS (
                SELECT 1 FROM pg_attribute
                WHERE attrelid = to_regclass(name) AND attname = 'id' AND NOT attisdropped
            ) THEN true
            ELSE NOT coalesce(
                has_sequence_privilege(pg_get_serial_sequence(name, 'id'), 'USAGE, UPDATE'), true
            )
        END
        UNION ALL
        SELECT name || '.' || column_name
        FROM unnest(%(column_tables)s::text[], %(columns)s::text[]) AS needed(name, column_name)
        WHERE to_regclass(name) IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM pg_attribute
            WHERE attrelid = to_regclass(name) AND attname = column_name AND NOT attisdropped
        )
        ORDER BY 1
        """,
        {
            "names": [table for table, _ in wanted],
            "privileges": [privilege for _, privilege in wanted],
            "numbered": list(NUMBERED),
            "column_tables": [table for table, _ in columns],
            "columns": [column for _, column in columns],
        },
    ).fetchall()
    return [name for (name,) in rows]


def not_ready_reason(tables: list[str]) -> str:
    return (
        f"the database is not ready for the service: {', '.join(tables)} missing, or not"
        " usable by this role; apply the migrations (python -m shared.db.migrations), or"
        " grant the role SELECT on ads and sellers, SELECT, INSERT, UPDATE, DELETE on"
        " moderation_results, idempotency_keys and dead_letters, and USAGE (or UPDATE) on"
        " the id sequences of moderation_results and dead_letters"
    )
