"""Statements over many rows, run a chunk at a time: each chunk is its own short
transaction over a window of ids, so that the consumer's and the relay's statements
never wait long behind one, and each starts past the highest id of the one before.

A chunk takes up to CHUNK_ROWS rows of an ID_WINDOW of ids: bounded by its rows alone,
a chunk that found few to take read on to the table's end (no index serves what these
statements look for), and on a table of millions ran past the statement timeout a
pooler's role is given (README, Deployment).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import psycopg
from psycopg import sql

CHUNK_ROWS = 5000
# The most rows a chunk reads, by primary key, whatever the table's size: milliseconds,
# where one statement reading a table of 2M tasks whole took 0.3 s.
ID_WINDOW = 50_000


class Chunk(NamedTuple):
    rows: int  # how many rows the chunk changed
    # The highest id it took: the next one starts past it, so that no chunk walks again
    # over the index entries of rows changed before (which a long-running reader elsewhere
    # keeps from being marked dead, making every rescan longer than the last).
    last_id: int


class IdSpan(NamedTuple):
    before_first: int
    last: int


def every_chunk(
    run_chunk: Callable[[int, int, int], Chunk],
    *,
    ids: IdSpan,
    rows: int = CHUNK_ROWS,
    window: int = ID_WINDOW,
) -> int:
    """Call `run_chunk(after_id, up_to_id, rows)` over the ids of `ids`, a window at a
    time, and a window again from where a full chunk stopped; the rows changed in all."""
    changed, after = 0, ids.before_first
    while after < ids.last:
        up_to = min(after + window, ids.last)
        chunk = run_chunk(after, up_to, rows)
        changed += chunk.rows
        after = chunk.last_id if chunk.rows >= rows else up_to
    return changed


def id_span(conn: psycopg.Connection, table: str) -> IdSpan:
    """The ids a walk over `table` covers, as they are when it begins: rows added after
    are younger than any cutoff it is looking for."""
    query = sql.SQL("SELECT coalesce(min(id) - 1, 0), coalesce(max(id), 0) FROM {}").format(
        sql.Identifier(table)
    )
    row = conn.execute(query).fetchone()
    assert row is not None  # an aggregate always answers one row
    return IdSpan(*row)


def chunk_counted(cursor: psycopg.Cursor) -> Chunk:
    """The Chunk of a statement ending in `SELECT count(*), coalesce(max(id), after)`."""
    row = cursor.fetchone()
    assert row is not None  # an aggregate always answers one row
    return Chunk(rows=row[0], last_id=row[1])
