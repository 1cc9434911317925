"""The connection pool and the transaction boundary.

Every failure of PostgreSQL itself (refused or dropped connection, pool
exhausted, statement timeout) leaves here as `DatabaseUnavailable`, so callers
treat it as temporary without knowing psycopg's exception tree.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import psycopg_pool
from psycopg import errors as pg_errors

from shared.db.transaction import Transaction
from shared.errors import DatabaseUnavailable

# Errors that say nothing about our SQL or data, only that the server is not
# answering right now; everything else (constraint violations, syntax) is a bug
# or bad data and propagates as it is.
_UNAVAILABLE = (
    psycopg.OperationalError,
    psycopg_pool.PoolTimeout,
    psycopg_pool.PoolClosed,
    pg_errors.QueryCanceled,
    pg_errors.AdminShutdown,
    pg_errors.CannotConnectNow,
)


class Database:
    """A lazily opened pool; `transaction()` commits on success and rolls back otherwise."""

    def __init__(
        self,
        url: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout_s: float = 5.0,
        statement_timeout_ms: int = 5000,
    ) -> None:
        self.url = url
        self._pool = psycopg_pool.ConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            timeout=connect_timeout_s,
            kwargs={
                "connect_timeout": max(1, int(connect_timeout_s)),
                "options": f"-c statement_timeout={statement_timeout_ms}",
            },
            # Open on first use, not at construction: nothing connects at import time.
            open=False,
            check=psycopg_pool.ConnectionPool.check_connection,
        )
        self._opened = False

    def _ensure_open(self) -> None:
        if not self._opened:
            # wait=False: a server that is down now must not block start-up;
            # each connection attempt fails fast and is retried by the caller.
            self._pool.open(wait=False)
            self._opened = True

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """One transaction on a pooled connection; commit happens only if the block succeeds."""
        self._ensure_open()
        try:
            with self._pool.connection() as conn:
                yield Transaction(conn)
        except _UNAVAILABLE as error:
            raise DatabaseUnavailable(f"PostgreSQL unavailable: {error}") from error

    def ping(self) -> None:
        with self.transaction() as tx:
            tx.conn.execute("SELECT 1")

    def close(self) -> None:
        if self._opened:
            self._pool.close()
            self._opened = False
