"""Readiness asks for the migrated tables and the role's privileges, not only SELECT 1."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from shared.db import schema_check
from shared.db.pool import Database
from shared.errors import DatabaseUnavailable


def _ping(conninfo: str) -> None:
    db = Database(conninfo, min_size=0, max_size=1, statement_timeout_ms=0)
    try:
        db.ping(timeout_s=5)
    finally:
        db.close()


@pytest.fixture
def role(database_url: str) -> Iterator[tuple[str, psycopg.Connection]]:
    """A login role of no privileges on the database, and an admin connection to grant them."""
    name = f"readiness_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'secret'").format(sql.Identifier(name))
        )
        try:
            yield name, admin
        finally:
            admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def test_the_session_database_is_ready(database_url: str) -> None:
    _ping(database_url)


def test_a_role_that_may_not_use_the_tables_is_not_ready_and_told_what_to_grant(
    database_url: str, role: tuple[str, psycopg.Connection]
) -> None:
    name, admin = role
    conninfo = make_conninfo(database_url, user=name, password="secret")

    def grant(privileges: str, objects: str) -> None:
        admin.execute(
            sql.SQL("GRANT {} ON {} TO {}").format(
                sql.SQL(privileges), sql.SQL(objects), sql.Identifier(name)
            )
        )

    def not_ready_for() -> str:
        with pytest.raises(DatabaseUnavailable) as raised:
            _ping(conninfo)
        reason = str(raised.value)
        assert "grant the role" in reason
        return reason.removeprefix("the database is not ready for the service: ").split(
            " missing, or not usable"
        )[0]

    grant("SELECT", "ads, sellers")
    written = "moderation_results, idempotency_keys, dead_letters"
    sequences = "dead_letters.id's sequence, moderation_results.id's sequence"
    assert not_ready_for() == (
        "dead_letters, dead_letters.id's sequence, idempotency_keys, moderation_results,"
        " moderation_results.id's sequence"
    )
    # Reading the tables it writes is not enough: each privilege is asked for alone.
    grant("SELECT", written)
    assert not_ready_for().startswith("dead_letters, dead_letters.id's sequence, idempotency_keys")
    grant("SELECT, INSERT, UPDATE", written)
    assert not_ready_for().startswith("dead_letters, dead_letters.id's sequence, idempotency_keys")
    grant("DELETE", written)
    assert not_ready_for() == sequences
    # nextval takes UPDATE on a sequence as well as USAGE.
    grant("UPDATE", "SEQUENCE moderation_results_id_seq, dead_letters_id_seq")
    _ping(conninfo)


def test_a_table_of_the_same_name_earlier_on_the_search_path_is_named_not_a_crash(
    database_url: str,
) -> None:
    schema = f"shadow_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        try:
            admin.execute(
                sql.SQL("CREATE TABLE {}.dead_letters (x int)").format(sql.Identifier(schema))
            )
            shadowed = make_conninfo(database_url, options=f"-c search_path={schema},public")
            with pytest.raises(DatabaseUnavailable) as raised:
                _ping(shadowed)
        finally:
            admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    assert "dead_letters.id's sequence" in str(raised.value)
    assert "dead_letters.source_headers" in str(raised.value)


def test_the_required_columns_are_those_the_migrations_leave(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = 'public' AND table_name = ANY(%s)",
            [list(schema_check.REQUIRED_COLUMNS)],
        ).fetchall()
    migrated: dict[str, set[str]] = {}
    for table, column in rows:
        migrated.setdefault(table, set()).add(column)
    assert migrated == {
        table: set(columns) for table, columns in schema_check.REQUIRED_COLUMNS.items()
    }


def test_a_database_missing_a_newer_migrations_column_is_not_ready(database_url: str) -> None:
    """A release deployed before its migrations ran: the tables are there, the newest
    column is not."""
    schema = f"behind_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        try:
            for table in schema_check.REQUIRED_COLUMNS:
                admin.execute(
                    sql.SQL("CREATE TABLE {}.{} (LIKE public.{} INCLUDING ALL)").format(
                        sql.Identifier(schema), sql.Identifier(table), sql.Identifier(table)
                    )
                )
            behind = make_conninfo(database_url, options=f"-c search_path={schema}")
            _ping(behind)  # a full copy of the schema is ready
            admin.execute(
                sql.SQL("ALTER TABLE {}.dead_letters DROP COLUMN source_headers").format(
                    sql.Identifier(schema)
                )
            )
            with pytest.raises(DatabaseUnavailable) as raised:
                _ping(behind)
        finally:
            admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    assert str(raised.value).startswith(
        "the database is not ready for the service: dead_letters.source_headers missing"
    )
    assert "python -m shared.db.migrations" in str(raised.value)


def test_a_database_never_migrated_is_not_ready_and_told_to_migrate(database_url: str) -> None:
    empty = f"never_migrated_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(empty)))
        try:
            with pytest.raises(DatabaseUnavailable) as raised:
                _ping(make_conninfo(database_url, dbname=empty))
        finally:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(empty)))

    reason = str(raised.value)
    assert reason.startswith(
        "the database is not ready for the service: ads, dead_letters, idempotency_keys,"
        " moderation_results, sellers missing"
    )
    assert "python -m shared.db.migrations" in reason
    assert conninfo_to_dict(database_url).get("password", "\0") not in reason
