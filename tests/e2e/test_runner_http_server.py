"""The runner's HTTP server at shutdown: a request being answered, or still being read, is
answered in full before `stop` returns; one that takes too long does not hold the
shutdown up, and neither does a connection its client reset."""

from __future__ import annotations

import socket
import struct
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from shared.runner.http_server import HttpServer
from tests.waiting import wait_until


class SlowApp:
    """Answers once `release` is set; `started` tells that a request is in."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, environ, start_response):
        self.started.set()
        self.release.wait(timeout=10)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"answered"]


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read()


def test_stop_waits_for_the_request_being_answered():
    app = SlowApp()
    server = HttpServer(app, "127.0.0.1", 0)
    server.start()
    url = f"http://127.0.0.1:{server.port}/"
    with ThreadPoolExecutor(max_workers=2) as pool:
        request = pool.submit(_get, url)
        assert app.started.wait(timeout=5)
        stopping = pool.submit(server.stop, 5.0)
        time.sleep(0.3)
        # Still answering: stop has not returned, and no new connection is taken.
        assert not stopping.done()
        with pytest.raises(OSError):  # refused, reset or timed out: not served
            urllib.request.urlopen(url, timeout=2)
        app.release.set()

        assert stopping.result(timeout=5) is True
        assert request.result(timeout=5) == (200, b"answered")


def test_stop_gives_up_on_a_request_that_outlasts_its_timeout():
    app = SlowApp()
    server = HttpServer(app, "127.0.0.1", 0)
    server.start()
    with ThreadPoolExecutor(max_workers=1) as pool:
        request = pool.submit(_get, f"http://127.0.0.1:{server.port}/")
        assert app.started.wait(timeout=5)
        started = time.monotonic()

        all_answered = server.stop(timeout_s=0.5)

        assert all_answered is False
        assert time.monotonic() - started < 2.0
        app.release.set()  # the request's thread still finishes its answer on its own
        assert request.result(timeout=5) == (200, b"answered")


def test_stop_with_nothing_in_flight_returns_at_once():
    server = HttpServer(SlowApp(), "127.0.0.1", 0)
    server.start()
    started = time.monotonic()

    assert server.stop(timeout_s=5.0) is True
    assert time.monotonic() - started < 1.0


def test_stop_waits_for_a_request_whose_headers_are_still_coming():
    # Accepted, but not yet handed to the app: it counts all the same.
    app = SlowApp()
    app.release.set()
    server = HttpServer(app, "127.0.0.1", 0)
    server.start()
    client = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
    wait_until(lambda: server.connections_in_flight == 1, timeout_s=5, what="the accept")
    with ThreadPoolExecutor(max_workers=1) as pool:
        stopping = pool.submit(server.stop, 5.0)
        time.sleep(0.3)
        assert not stopping.done()
        client.sendall(b"\r\n")

        answer = client.recv(1000)
        assert stopping.result(timeout=5) is True
    client.close()
    assert answer.startswith(b"HTTP/1.1 200")


def _reset(client: socket.socket) -> None:
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()


def test_a_connection_reset_by_its_client_does_not_hold_the_shutdown_up():
    def reads_part_of_the_body(environ, start_response):
        environ["wsgi.input"].read(2)
        time.sleep(0.2)  # the client's extra bytes arrive meanwhile
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    server = HttpServer(reads_part_of_the_body, "127.0.0.1", 0)
    server.start()
    client = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    client.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab")
    time.sleep(0.1)
    client.sendall(b"more than its Content-Length")
    assert client.recv(1000).startswith(b"HTTP/1.1 200")
    time.sleep(0.3)  # werkzeug is now reading what is left of the request
    _reset(client)  # a reset in that read once left the request counted for good
    time.sleep(0.3)
    started = time.monotonic()

    assert server.stop(timeout_s=2.0) is True
    assert time.monotonic() - started < 1.0
