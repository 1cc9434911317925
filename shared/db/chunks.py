"""Statements over many rows, run a chunk at a time: each chunk is its own short
transaction, so that the consumer's and the relay's statements never wait long behind
one, and each starts past the highest id of the one before."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import psycopg

CHUNK_ROWS = 5000


class Chunk(NamedTuple):
    rows: int  # how many rows the chunk changed
    # The highest id it took: the next one starts past it, so that no chunk walks again
    # over the index entries of rows changed before (which a long-running reader elsewhere
    # keeps from being marked dead, making every rescan longer than the last).
    last_id: int


def every_chunk(run_chunk: Callable[[int, int], Chunk], *, rows: int = CHUNK_ROWS) -> int:
    """Call `run_chunk(after_id, rows)` until a chunk comes back short; the rows in all."""
    changed, after = 0, 0
    while True:
        chunk = run_chunk(after, rows)
        changed += chunk.rows
        if chunk.rows < rows:
            return changed
        after = chunk.last_id


def chunk_counted(cursor: psycopg.Cursor) -> Chunk:
    """The Chunk of a statement ending in `SELECT count(*), coalesce(max(id), after)`."""
    row = cursor.fetchone()
    assert row is not None  # an aggregate always answers one row
    return Chunk(rows=row[0], last_id=row[1])
