"""Statements as one blocking libpq call, for the hot paths: a lookup by key, a batch.

psycopg runs a query as a generator driven by a wait loop (send, wait on the
socket, read), and each step gives up the GIL. In a process whose other threads
want the GIL (a gunicorn worker's, the consumer's partition workers), every one of
those releases is a hand-off that then waits to get it back. On simple_predict's
server settings, hello world plus a lookup by key served 729-850 req/s through the
pool and `execute`, and 1,076 as one `PQexecPrepared`, which gives up the GIL once
for the whole round trip (`execute` on a fixed connection, 908-1,211, was too noisy
to tell apart from it; bench/README.md, "Where the time goes").

A lookup by key is prepared once per connection under a name of its own, which
psycopg's own prepared-statement cache (named `_pg3_N`) never uses, unless the
connection prepares nothing (`prepare_threshold` None: DB_PREPARED_STATEMENTS=false). A batch
statement is not prepared, for the reason in shared/db/arrays.py. Parameters go
as text (`$1`, `$2`, ...), except the binary arrays of shared/db/arrays.py, which
go as they are with their type. Results are loaded by psycopg's Transformer, so
types come back exactly as `execute` returns them. Errors are psycopg's, as
`execute` would raise them.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import errors, pq
from psycopg.adapt import Transformer

from shared.db.arrays import BinaryArray

_OK = (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK)


@dataclass(frozen=True, slots=True)
class KeyLookup:
    """A statement returning at most one row; parameters are `$1`, `$2`, ... (text format)."""

    name: str
    sql: str


# Which lookups each connection has prepared; a new connection (after a restart of
# PostgreSQL, say) starts empty, and a dropped one takes its entry with it. The server
# may have forgotten one all the same: psycopg sends DEALLOCATE ALL when it rolls back a
# connection where it prepared statements of its own, so a missing one is prepared again.
_prepared: weakref.WeakKeyDictionary[psycopg.Connection, set[str]] = weakref.WeakKeyDictionary()
_NO_SUCH_STATEMENT = "26000"  # invalid_sql_statement_name
_ALREADY_PREPARED = "42P05"  # duplicate_prepared_statement


def fetch_one(
    conn: psycopg.Connection, lookup: KeyLookup, params: Sequence[object]
) -> tuple[Any, ...] | None:
    """The lookup's row, or None."""
    values = _text(params)
    with conn.lock:
        pgconn = conn.pgconn
        if conn.prepare_threshold is None or pgconn.transaction_status != pq.TransactionStatus.IDLE:
            # A connection that prepares nothing (DB_PREPARED_STATEMENTS=false) sends the
            # statement whole. So does one inside a transaction, where a failed EXECUTE
            # would abort it, so there is no preparing again after a DEALLOCATE.
            result = pgconn.exec_params(lookup.sql.encode(), values)
        else:
            result = _execute_prepared(conn, lookup, values)
            if _sqlstate(result) == _NO_SUCH_STATEMENT:
                _prepared[conn].discard(lookup.name)
                result = _execute_prepared(conn, lookup, values)
        _check(conn, result)
        rows = _load(conn, result)
    return rows[0] if rows else None


def _execute_prepared(
    conn: psycopg.Connection, lookup: KeyLookup, values: list[bytes | None]
) -> pq.PGresult:
    names = _prepared.setdefault(conn, set())
    if lookup.name not in names:
        result = conn.pgconn.prepare(lookup.name.encode(), lookup.sql.encode())
        # Already there (prepared before this bookkeeping knew of it): the name is ours,
        # and so is its one statement.
        if _sqlstate(result) != _ALREADY_PREPARED:
            _check(conn, result)
        names.add(lookup.name)
    return conn.pgconn.exec_prepared(lookup.name.encode(), values)


def _sqlstate(result: pq.PGresult) -> str | None:
    state = result.error_field(pq.DiagnosticField.SQLSTATE)
    return state.decode() if state else None


def fetch_all(
    conn: psycopg.Connection, sql: str, params: Sequence[object]
) -> list[tuple[Any, ...]]:
    """Every row of an unprepared statement (none for one that returns nothing)."""
    values, types, formats = _typed(params)
    with conn.lock:
        result = conn.pgconn.exec_params(sql.encode(), values, types, formats)
        _check(conn, result)
        return _load(conn, result)


def _typed(params: Sequence[object]) -> tuple[list[bytes | None], list[int], list[int]]:
    """Values, type oids and formats: a binary array with its type, anything else as
    text of a type the server infers (oid 0)."""
    values: list[bytes | None] = []
    types: list[int] = []
    formats: list[int] = []
    for value in params:
        if isinstance(value, BinaryArray):
            values.append(value.data)
            types.append(value.type_oid)
            formats.append(pq.Format.BINARY)
        else:
            values.append(_as_text(value))
            types.append(0)
            formats.append(pq.Format.TEXT)
    return values, types, formats


def _text(params: Sequence[object]) -> list[bytes | None]:
    return [_as_text(value) for value in params]


def _as_text(value: object) -> bytes | None:
    return None if value is None else str(value).encode()


def _load(conn: psycopg.Connection, result: pq.PGresult) -> list[tuple[Any, ...]]:
    if result.ntuples == 0:
        return []
    loader = Transformer(conn)
    loader.set_pgresult(result)
    return loader.load_rows(0, result.ntuples, tuple)


def _check(conn: psycopg.Connection, result: pq.PGresult) -> None:
    if result.status in _OK:
        return
    if conn.pgconn.status == pq.ConnStatus.BAD:
        # A dropped connection carries no SQLSTATE; `execute` calls it operational too.
        message = result.get_error_message(conn.info.encoding) or "connection lost"
        raise psycopg.OperationalError(f"consuming input failed: {message.strip()}")
    raise errors.error_from_result(result, encoding=conn.info.encoding)
