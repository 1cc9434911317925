"""Readiness asks for the migrated tables and the role's privileges, not only SELECT 1."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

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
    grant = sql.SQL("GRANT {} ON {} TO {}")
    admin.execute(grant.format(sql.SQL("SELECT"), sql.SQL("ads, sellers"), sql.Identifier(name)))

    with pytest.raises(DatabaseUnavailable) as raised:
        _ping(conninfo)

    reason = str(raised.value)
    assert (
        "dead_letters, dead_letters.id's sequence, idempotency_keys, moderation_results,"
        " moderation_results.id's sequence missing, or not usable by this role"
    ) in reason
    assert "grant the role" in reason and "ads," not in reason.split("missing")[0]

    every_table = sql.SQL("moderation_results, idempotency_keys, dead_letters")
    admin.execute(
        grant.format(sql.SQL("SELECT, INSERT, UPDATE, DELETE"), every_table, sql.Identifier(name))
    )
    with pytest.raises(
        DatabaseUnavailable,
        match=r"dead_letters\.id's sequence, moderation_results\.id's sequence missing",
    ):
        _ping(conninfo)

    sequences = sql.SQL("SEQUENCE moderation_results_id_seq, dead_letters_id_seq")
    admin.execute(grant.format(sql.SQL("USAGE"), sequences, sql.Identifier(name)))
    _ping(conninfo)


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
