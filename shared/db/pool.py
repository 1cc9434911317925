"""The connection pool and the transaction boundary.

Every failure of PostgreSQL itself (refused or dropped connection, pool
exhausted, statement timeout) leaves here as `DatabaseUnavailable`, so callers
treat it as temporary without knowing psycopg's exception tree.
"""

from __future__ import annotations

import logging
import math
import os
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Self

import psycopg
import psycopg_pool
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict

from shared.db import schema_check
from shared.db.session import Session
from shared.errors import DatabaseUnavailable
from shared.logging_setup import drop_repeats

log = logging.getLogger(__name__)

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
    # A server in recovery, or a standby just promoted from one, refuses writes for a
    # while: for the caller that is the database being unavailable, not a bug.
    pg_errors.ReadOnlySqlTransaction,
    # The server ended a session left idle in a transaction (IDLE_IN_TRANSACTION_TIMEOUTS):
    # the process stalled, and what it was doing is rolled back, to be done again.
    pg_errors.IdleInTransactionSessionTimeout,
)

# Outages that leave the connections as they were: no connection free in time, a
# statement that ran out of time, a server refusing writes, a transaction the server
# rolled back to break a deadlock (two consumers finishing overlapping batches after a
# rebalance) or a serialization conflict (psycopg counts these OperationalErrors; run
# again, they succeed).
_CONNECTIONS_INTACT = (
    psycopg_pool.PoolTimeout,
    pg_errors.QueryCanceled,
    pg_errors.ReadOnlySqlTransaction,
    pg_errors.DeadlockDetected,
    pg_errors.SerializationFailure,
)

# Failures of one statement, which say nothing of whether the server can be reached.
_STATEMENT_ONLY = (
    pg_errors.QueryCanceled,
    pg_errors.DeadlockDetected,
    pg_errors.SerializationFailure,
)

# psycopg's own default: a statement is prepared on its fifth run on a connection.
PSYCOPG_PREPARE_THRESHOLD = 5

# A pooled connection idle for longer than this is pinged before it is reused.
IDLE_CHECK_AFTER_S = 2.0


# How long psycopg_pool keeps retrying one failed connect (at 0, 1, 3 s, ... doubling)
# before giving up; the next request that wants a connection then starts again at once.
# Its default, 5 minutes, let the delay double to 64 s and beyond: a server back after
# an outage of a minute went unnoticed for up to another minute of 503s and stalled
# batches. With 5 s, attempts are at most 2 s apart while anything wants one.
RECONNECT_WINDOW_S = 5.0


# A transaction of ours is idle only while it publishes what it has locked (the relay,
# a consumer's dead letters), which settings hold under the statement timeout. A session
# idle in a transaction for twice that is a process frozen or cut off mid-transaction:
# the server ends it, and its row locks go with it, instead of holding up every UPDATE of
# those tasks until TCP notices, two hours by default.
IDLE_IN_TRANSACTION_TIMEOUTS = 2


# A connect failure older than this is not named as the reason a call found no
# connection: by then the pool has tried again, and the server may be down for another.
CONNECT_FAILURE_NAMED_FOR_S = 2 * RECONNECT_WINDOW_S


def session_options(url: str, statement_timeout_ms: int) -> str:
    """libpq's `options` for a pooled connection: the URL's own (or PGOPTIONS), then our
    statement timeout and idle-in-transaction timeout, which win over ones they set. A
    keyword argument replaces the URL's `options` whole, so a `search_path` given there
    was silently dropped.

    A timeout of 0 adds nothing, so that the server's (the role's, the database's) holds,
    and no `options` at all go when nothing else is given: PgBouncer refuses a
    connection whose `options` set what it does not track, and up to 1.19 one that sends
    any (README, Deployment, behind a connection pooler)."""
    given = conninfo_to_dict(url).get("options") or os.environ.get("PGOPTIONS", "")
    ours = (
        f"-c statement_timeout={statement_timeout_ms} -c idle_in_transaction_session_timeout="
        f"{statement_timeout_ms * IDLE_IN_TRANSACTION_TIMEOUTS}"
        if statement_timeout_ms
        else ""
    )
    return f"{given} {ours}".strip()


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
        prepared_statements: bool = True,
    ) -> None:
        self.url = url
        options = session_options(url, statement_timeout_ms)
        # psycopg_pool warns of every failed connect, each as the one before: once a
        # minute is enough to tell an outage goes on.
        drop_repeats("psycopg.pool")
        self._last_connect_failure: tuple[float, str] | None = None
        self._pool = psycopg_pool.ConnectionPool(
            url,
            connection_class=_connection_class_noting_failures(self._note_connect_failure),
            min_size=min_size,
            max_size=max_size,
            timeout=connect_timeout_s,
            reconnect_timeout=RECONNECT_WINDOW_S,
            kwargs={
                # libpq takes whole seconds (and reads 1 as 2): rounded up, so a
                # connection is never given up on sooner than the setting says.
                "connect_timeout": math.ceil(connect_timeout_s),
                # Text comes back as str only in UTF-8: a PGCLIENTENCODING of SQL_ASCII in
                # the environment (or the URL's) made every stored ad bytes, and a 422.
                "client_encoding": "UTF8",
                **({"options": options} if options else {}),
                # Transactions are explicit (`transaction()`); a lone statement then
                # costs one round trip instead of BEGIN, statement, COMMIT.
                "autocommit": True,
                # Repeated statements are prepared (psycopg's default, and the blocking
                # lookups follow the connection's setting), so a lookup by key is planned
                # once; batch statements opt out (see shared/db/arrays.py). Not behind a
                # pooler that hands each transaction another server connection, where
                # a statement prepared on one is missing, or another's, on the next.
                "prepare_threshold": PSYCOPG_PREPARE_THRESHOLD if prepared_statements else None,
            },
            # Open on first use, not at construction: nothing connects at import time.
            open=False,
            check=self._check_if_idle,
            # No `reset` hook: with one, the pool hands every returned connection to
            # a worker thread, and that hand-off cost simple_predict a fifth of its
            # rate (bench/bench_http.py). `_connection` notes the return time instead.
        )
        self._opened = False
        self._returned_at: weakref.WeakKeyDictionary[psycopg.Connection, float] = (
            weakref.WeakKeyDictionary()
        )
        self._broken_seen_at = -math.inf
        # When a call first found the server unreachable, until one gets a connection again.
        self._unreachable_since: float | None = None

    def _ensure_open(self) -> None:
        if not self._opened:
            # wait=False: a server that is down now must not block start-up;
            # each connection attempt fails fast and is retried by the caller.
            self._pool.open(wait=False)
            self._opened = True

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One transaction on a pooled connection; commit happens only if the block succeeds."""
        with self._connection() as conn, conn.transaction():
            yield Session(conn)

    @contextmanager
    def autocommit(self) -> Iterator[Session]:
        """Each statement commits on its own: for reads and single-statement writes."""
        with self._connection() as conn:
            yield Session(conn)

    @contextmanager
    def _connection(self, wait_s: float | None = None) -> Iterator[psycopg.Connection]:
        """A pooled connection, waited for `wait_s` (DB_CONNECT_TIMEOUT_S by default)."""
        try:
            # Inside: a pool closed at shutdown refuses to open again (PoolClosed), and a
            # request that comes then gets a 503 like any other outage, not a 500.
            self._ensure_open()
            # getconn/putconn, not the pool's `connection()`, which also enters the
            # connection's own context to commit on exit: nothing for an autocommit
            # connection, whose transactions are `conn.transaction()` blocks, and ~30 µs
            # a request in simple_predict's server. putconn rolls back, or replaces, a
            # connection returned in a transaction or broken.
            conn = self._pool.getconn(timeout=wait_s)
            if self._unreachable_since is not None:
                self._note_reachable_again()
            try:
                yield conn
            finally:
                self._returned_at[conn] = time.monotonic()
                self._pool.putconn(conn)
        except _UNAVAILABLE as error:
            if not isinstance(error, _CONNECTIONS_INTACT):
                # What broke this connection (a restart, a failover, backends terminated)
                # has most likely broken the idle ones too: each is pinged before its next
                # use, instead of failing one more request apiece.
                self._broken_seen_at = time.monotonic()
            if self._unreachable_since is None and not isinstance(error, _STATEMENT_ONLY):
                self._unreachable_since = time.monotonic()
            raise DatabaseUnavailable(
                f"PostgreSQL unavailable: {error}{self._connect_failure_reason(error)}"
            ) from error

    def _note_connect_failure(self, error: psycopg.OperationalError | None) -> None:
        self._last_connect_failure = None if error is None else (time.monotonic(), str(error))

    def _connect_failure_reason(self, error: Exception) -> str:
        """Why the pool had no connection to give, when a connect failed lately.

        psycopg_pool's timeout says only that none came in time; the reason (a wrong
        password, a database that does not exist, a host that cannot be resolved) is
        otherwise in one warning a minute, far from the 503s and the readiness check's
        line that an operator reads first."""
        failure = self._last_connect_failure
        if not isinstance(error, psycopg_pool.PoolTimeout) or failure is None:
            return ""
        failed_at, message = failure
        if time.monotonic() - failed_at > CONNECT_FAILURE_NAMED_FOR_S:
            return ""
        return f"; the last attempt to connect failed: {message.strip()}"

    def _note_reachable_again(self) -> None:
        """Say, once, that an outage is over: its start is in the log (the failed
        connects, the 503s, the consumer's retries), and its end would otherwise show
        only as those lines stopping."""
        since, self._unreachable_since = self._unreachable_since, None
        if since is not None:  # another thread may have said it first
            log.info(
                "PostgreSQL reachable again",
                extra={"unreachable_for_s": round(time.monotonic() - since, 1)},
            )

    def _check_if_idle(self, conn: psycopg.Connection) -> None:
        # A busy connection is not pinged (a round trip per use); one that sat idle
        # may have been cut by a server restart, and one returned before another
        # connection broke may have been cut with it: those are checked first.
        returned_at = self._returned_at.get(conn, -math.inf)
        if (
            returned_at <= self._broken_seen_at
            or time.monotonic() - returned_at > IDLE_CHECK_AFTER_S
        ):
            psycopg_pool.ConnectionPool.check_connection(conn)

    def ping(self, timeout_s: float | None = None) -> None:
        """Raise DatabaseUnavailable unless the server answers and holds the migrated
        tables the role may use, waiting at most `timeout_s` for a connection: a
        readiness check must answer with its reason before its own deadline."""
        with self._connection(timeout_s) as conn:
            unusable = schema_check.unusable_tables(conn)
        if unusable:
            raise DatabaseUnavailable(schema_check.not_ready_reason(unusable))

    def close(self, timeout_s: float = 5.0) -> None:
        """Close every connection; the pool's own threads get `timeout_s` to end."""
        if self._opened:
            self._pool.close(timeout=timeout_s)
            self._opened = False


def _connection_class_noting_failures(
    note: Callable[[psycopg.OperationalError | None], None],
) -> type[psycopg.Connection]:
    """A connection class that tells `note` how each connect ends: the error, or None."""

    class ConnectionNotingFailures(psycopg.Connection):
        @classmethod
        def connect(cls, conninfo: str = "", **kwargs: Any) -> Self:
            try:
                conn = super().connect(conninfo, **kwargs)
            except psycopg.OperationalError as error:
                note(error)
                raise
            note(None)
            return conn

    return ConnectionNotingFailures


def one_shot_connection(database_url: str, connect_timeout_s: float) -> psycopg.Connection:
    """One autocommit connection outside any pool, for a job that runs a statement or two
    and ends: an operator's command, the local runner's start-up. (libpq takes its
    connect timeout in whole seconds.)

    It prepares nothing, whatever DB_PREPARED_STATEMENTS says: a job that ends soon gains
    nothing by it, and behind a pooler in transaction mode a statement it prepared would
    stay on the server connection for the next job to collide with."""
    return psycopg.connect(
        database_url,
        autocommit=True,
        connect_timeout=math.ceil(connect_timeout_s),
        prepare_threshold=None,
    )
