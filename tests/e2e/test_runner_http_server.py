"""The runner's HTTP server at shutdown: a request being answered is answered in full
before `stop` returns, and one that takes too long does not hold the shutdown up."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from shared.runner.http_server import HttpServer


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
        with pytest.raises(urllib.error.URLError):
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
