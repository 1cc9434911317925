"""Lookups by key as one blocking libpq call: the request path's statements.

psycopg runs a query as a generator driven by a wait loop (send, wait on the
socket, read), and each step gives up the GIL. In a gunicorn worker whose other
threads want the GIL, every one of those releases is a hand-off that then waits
to get it back; a lookup by key through `execute` cost simple_predict about a
quarter of its rate against the same lookup as one `PQexecPrepared`, which gives
up the GIL once for the whole round trip (bench/bench_http.py).

The statement is prepared once per connection under a name of its own, which
psycopg's own prepared-statement cache (named `_pg3_N`) never uses. Results are
loaded by psycopg's Transformer, so types come back exactly as `execute` returns them.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import errors, pq
from psycopg.adapt import Transformer

_OK = (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK)


@dataclass(frozen=True, slots=True)
class KeyLookup:
    """A statement returning at most one row; parameters are `$1`, `$2`, ... (text format)."""

    name: str
    sql: str


# Which lookups each connection has prepared; a new connection (after a restart of
# PostgreSQL, say) starts empty, and a dropped one takes its entry with it.
_prepared: weakref.WeakKeyDictionary[psycopg.Connection, set[str]] = weakref.WeakKeyDictionary()


def fetch_one(
    conn: psycopg.Connection, lookup: KeyLookup, params: Sequence[object]
) -> tuple[Any, ...] | None:
    """The lookup's row, or None. Errors are psycopg's, as `execute` would raise them."""
    with conn.lock:
        pgconn = conn.pgconn
        names = _prepared.setdefault(conn, set())
        if lookup.name not in names:
            _check(conn, pgconn.prepare(lookup.name.encode(), lookup.sql.encode()))
            names.add(lookup.name)
        result = pgconn.exec_prepared(
            lookup.name.encode(), [None if p is None else str(p).encode() for p in params]
        )
        _check(conn, result)
        if result.ntuples == 0:
            return None
        loader = Transformer(conn)
        loader.set_pgresult(result)
        return loader.load_row(0, tuple)


def _check(conn: psycopg.Connection, result: pq.PGresult) -> None:
    if result.status in _OK:
        return
    if conn.pgconn.status == pq.ConnStatus.BAD:
        # A dropped connection carries no SQLSTATE; `execute` calls it operational too.
        message = result.get_error_message(conn.info.encoding) or "connection lost"
        raise psycopg.OperationalError(f"consuming input failed: {message.strip()}")
    raise errors.error_from_result(result, encoding=conn.info.encoding)
