"""The pool's boundary: whatever PostgreSQL or the pool refuses leaves as DatabaseUnavailable."""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
import time

import pytest

from shared.db.pool import Database
from shared.errors import DatabaseUnavailable


def test_a_pool_closed_at_shutdown_answers_as_an_outage_not_a_bug():
    # The runner closes its services and leaves them installed: a late request must get
    # the 503 of an outage, where the pool's PoolClosed on reopening was a 500.
    db = Database("postgresql://127.0.0.1:9/unused", connect_timeout_s=1)
    db._ensure_open()
    db.close()

    with pytest.raises(DatabaseUnavailable, match="PostgreSQL unavailable"), db.autocommit():
        pass


def test_a_connect_timeout_below_a_second_is_rounded_up_not_down_to_no_timeout():
    # libpq takes whole seconds, and reads 0 as "wait for ever".
    db = Database("postgresql://127.0.0.1:9/unused", connect_timeout_s=0.5)

    assert db._pool.kwargs["connect_timeout"] == 1


def test_connects_keep_being_tried_every_few_seconds_however_long_the_outage(
    refusing_server,
):
    # A server that accepts and hangs up: each connect attempt is one accepted socket.
    port, attempts = refusing_server
    db = Database(
        f"postgresql://127.0.0.1:{port}/unused?sslmode=disable&gssencmode=disable",
        connect_timeout_s=1,
    )
    started = _keep_asking_for_a_connection(db, seconds=11)

    # Retried with psycopg_pool's doubling delay for its default 5 minutes, the attempts
    # would be at 0, 1, 3 and 7 s, the next at 15, then 31, 63, ...: none in the last
    # 4 s of these 11, and gaps of 4 s and more.
    seconds = [round(attempt - started, 2) for attempt in attempts]
    assert any(second > 8 for second in seconds), seconds
    gaps = [later - earlier for earlier, later in itertools.pairwise(seconds)]
    assert max(gaps) < 3.5, seconds


@pytest.fixture
def refusing_server():
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    attempts: list[float] = []
    stop = threading.Event()

    def accept_and_hang_up() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            attempts.append(time.monotonic())
            conn.close()

    thread = threading.Thread(target=accept_and_hang_up, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], attempts
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def test_a_failed_connect_is_warned_of_once_however_often_it_is_tried_again(caplog):
    # psycopg_pool warns of each try, at 0, 1 and 3 s in its first reconnect window.
    db = Database("postgresql://127.0.0.1:9/unused?sslmode=disable", connect_timeout_s=1)
    _keep_asking_for_a_connection(db, seconds=4)

    failures = [r for r in caplog.records if "error connecting in" in r.getMessage()]
    assert len(failures) == 1, [r.getMessage() for r in failures]


def _keep_asking_for_a_connection(db: Database, *, seconds: float) -> float:
    """Ask `db` for a connection again and again for `seconds`, then close it; when it began."""
    started = time.monotonic()
    try:
        while time.monotonic() < started + seconds:
            with contextlib.suppress(DatabaseUnavailable), db.autocommit():
                pass
    finally:
        db.close()
    return started
