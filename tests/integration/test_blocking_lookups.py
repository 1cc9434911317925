"""Statements as one blocking libpq call (shared/db/blocking.py) against a real PostgreSQL."""

from __future__ import annotations

import numpy as np
import psycopg
import pytest

from shared.db import blocking
from shared.db.ads import load_ad_with_seller
from shared.db.arrays import bigint_array, boolean_array, float8_array
from shared.db.blocking import KeyLookup, fetch_all, fetch_one
from shared.domain import Ad
from shared.errors import DatabaseUnavailable
from shared.settings import Settings
from tests.integration.database_rows import seed_ads
from tests.integration.wiring import wired_services

TYPED = KeyLookup(
    "test_typed_row",
    "SELECT $1::bigint, $1::bigint > 1, $1::bigint / 3.0, now(), 'é' || $1::text, NULL::int",
)


def test_a_row_comes_back_with_the_types_execute_gives(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        expected = conn.execute(TYPED.sql.replace("$1", "%(id)s"), {"id": 7}).fetchone()
        row = fetch_one(conn, TYPED, (7,))
    assert row is not None and expected is not None
    assert [type(value) for value in row] == [type(value) for value in expected]
    assert row[:3] == expected[:3] and row[4:] == expected[4:] == ("é7", None)


def test_the_statement_is_prepared_once_per_connection(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        for item_id in (1, 2, 3):
            assert fetch_one(conn, TYPED, (item_id,))[0] == item_id
        prepared = conn.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE name = %s", (TYPED.name,)
        ).fetchone()
    assert prepared == (1,)
    with psycopg.connect(database_url, autocommit=True) as fresh:
        assert fetch_one(fresh, TYPED, (4,))[0] == 4


def test_no_row_is_none_and_a_bad_statement_raises_psycopgs_error(database_url: str) -> None:
    nothing = KeyLookup("test_nothing", "SELECT 1 WHERE $1::int < 0")
    broken = KeyLookup("test_broken", "SELECT * FROM no_such_table WHERE id = $1")
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert fetch_one(conn, nothing, (5,)) is None
        with pytest.raises(psycopg.errors.UndefinedTable):
            fetch_one(conn, broken, (5,))
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            fetch_one(conn, nothing, ("five",))
        # The connection is still usable after both errors.
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_none_parameter_reaches_the_server_as_null(database_url: str) -> None:
    # As `execute` sends it: the text "None" would be refused as a bigint, or match as a string.
    nullable = KeyLookup("test_nullable", "SELECT $1::bigint IS NULL, $2::text IS NULL")
    with psycopg.connect(database_url, autocommit=True) as conn:
        looked_up = fetch_one(conn, nullable, (None, None))
        batch = fetch_all(conn, "SELECT $1::text IS NULL", (None,))

    assert looked_up == (True, True)
    assert batch == [(True,)]


def test_the_ad_lookup_reads_the_ad_and_its_sellers_flag(settings: Settings) -> None:
    with wired_services(settings) as services:
        [item_id] = seed_ads(services, 1, name="Road bike")
        with services.db.autocommit() as session:
            ad = load_ad_with_seller(session.conn, item_id)
            missing = load_ad_with_seller(session.conn, item_id + 1)
            [seller_id] = session.conn.execute(
                "SELECT seller_id FROM ads WHERE id = %s", (item_id,)
            ).fetchone()
    assert ad == Ad(
        item_id=item_id,
        seller_id=seller_id,
        is_verified_seller=True,
        name="Road bike 1",
        description="Aluminium frame, 21 gears, barely used.",
        category=3,
        images_qty=4,
    )
    assert missing is None


def test_the_ad_lookup_finds_an_ad_by_its_own_id_not_by_its_sellers(settings: Settings) -> None:
    # Two ads of one seller: the second's id is no seller's, so only a lookup by the ad's
    # own id finds it (on a fresh database the first ad and its seller share id 1).
    with wired_services(settings) as services:
        [_, second] = seed_ads(services, 2)
        with services.db.autocommit() as session:
            ad = load_ad_with_seller(session.conn, second)

    assert ad is not None and ad.item_id == second


def test_a_dropped_connection_is_a_temporary_error_and_the_pool_replaces_it(
    settings: Settings,
) -> None:
    with wired_services(settings) as services:
        [item_id] = seed_ads(services, 1)
        with pytest.raises(DatabaseUnavailable), services.db.autocommit() as session:
            backend = session.conn.info.backend_pid
            with psycopg.connect(settings.database_url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (backend,))
            session.load_ad_with_seller(item_id)
        with services.db.autocommit() as session:
            assert session.load_ad_with_seller(item_id).item_id == item_id


def test_a_batch_statement_returns_every_row_and_runs_in_the_callers_transaction(
    database_url: str,
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TEMP TABLE numbers (n bigint PRIMARY KEY)")
        inserted = fetch_all(
            conn,
            "INSERT INTO numbers SELECT unnest($1::bigint[]) RETURNING n",
            ("{3,1,2}",),
        )
        assert sorted(inserted) == [(1,), (2,), (3,)]
        assert fetch_all(conn, "DELETE FROM numbers WHERE n > $1", (9,)) == []
        with pytest.raises(psycopg.errors.UniqueViolation), conn.transaction():
            fetch_all(conn, "DELETE FROM numbers WHERE n = $1", (1,))
            fetch_all(conn, "INSERT INTO numbers VALUES ($1)", (2,))
        # The failed transaction took its DELETE with it.
        assert conn.execute("SELECT count(*) FROM numbers").fetchone() == (3,)


def test_a_lookup_survives_psycopgs_deallocate_all_after_a_rollback(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        for _ in range(6):  # psycopg prepares a statement of its own after five runs
            conn.execute("SELECT 1")
        assert fetch_one(conn, TYPED, (1,))[0] == 1
        # Rolling back, psycopg forgets its statements with DEALLOCATE ALL, ours too.
        with pytest.raises(ZeroDivisionError), conn.transaction():
            conn.execute("SELECT 1")
            raise ZeroDivisionError
        assert conn.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE name = %s", (TYPED.name,)
        ).fetchone() == (0,)

        assert fetch_one(conn, TYPED, (2,))[0] == 2
        assert fetch_one(conn, TYPED, (3,))[0] == 3


def test_a_lookup_the_server_still_holds_is_used_as_it_is(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert fetch_one(conn, TYPED, (1,))[0] == 1
        blocking._prepared[conn].clear()  # as if this process had lost track of it
        assert fetch_one(conn, TYPED, (2,))[0] == 2


def test_a_lookup_inside_a_transaction_runs_unprepared_and_keeps_the_transaction(
    database_url: str,
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TEMP TABLE seen (n bigint)")
        with conn.transaction():
            conn.execute("INSERT INTO seen VALUES (1)")
            assert fetch_one(conn, TYPED, (5,))[0] == 5
            conn.execute("INSERT INTO seen VALUES (2)")
        assert conn.execute("SELECT count(*) FROM seen").fetchone() == (2,)
        assert conn.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE name = %s", (TYPED.name,)
        ).fetchone() == (0,)


@pytest.mark.parametrize(
    ("array", "expected", "sql_type"),
    [
        (bigint_array([1, -2, 2**63 - 1, -(2**63)]), [1, -2, 2**63 - 1, -(2**63)], "bigint[]"),
        (bigint_array([]), [], "bigint[]"),
        (
            float8_array([0.1, 1 / 3, 1e-300, 0.0, 1.0]),
            [0.1, 1 / 3, 1e-300, 0.0, 1.0],
            "double precision[]",
        ),
        # Widened as numpy widens it: 0.1 in float32 is 0.10000000149011612.
        (
            float8_array(np.array([0.1, 0.5], dtype=np.float32)),
            [float(np.float32(0.1)), 0.5],
            "double precision[]",
        ),
        (boolean_array([True, False, True]), [True, False, True], "boolean[]"),
        (boolean_array(np.array([False, True])), [False, True], "boolean[]"),
    ],
)
def test_binary_arrays_reach_the_server_exactly_and_typed(
    database_url: str, array: object, expected: list[object], sql_type: str
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        # No cast in the SQL: the parameter's own type is what the server sees.
        rows = fetch_all(conn, "SELECT $1, pg_typeof($1)::text, cardinality($1)", (array,))
    assert rows == [(expected, sql_type, len(expected))]


def test_a_bigint_array_refuses_a_value_past_the_bigint_range() -> None:
    with pytest.raises(OverflowError):
        bigint_array([2**63])


@pytest.mark.parametrize(
    "values",
    [np.array([2**63], dtype=np.uint64), np.array([1.5])],
    ids=["uint64", "float"],
)
def test_a_bigint_array_refuses_a_numpy_array_it_would_have_to_wrap_or_truncate(values) -> None:
    # Cast unchecked, 2**63 would become -2**63 and 1.5 would become 1: another row's id.
    with pytest.raises(TypeError):
        bigint_array(values)
