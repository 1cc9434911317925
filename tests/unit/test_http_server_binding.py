"""Where the runner's and the worker processes' HTTP server listens, and how it says it
cannot: the socket is bound by us, not by werkzeug, so these are ours to keep."""

from __future__ import annotations

import errno
import socket
import urllib.request

import pytest

from shared.runner.http_server import CannotListen, HttpServer


def _app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


@pytest.mark.skipif(not socket.has_dualstack_ipv6(), reason="no dual-stack IPv6 here")
def test_a_server_on_all_ipv6_addresses_answers_ipv4_clients_too():
    server = HttpServer(_app, "::", 0)
    server.start()
    try:
        answers = [
            urllib.request.urlopen(f"http://{host}:{server.port}/", timeout=5).status
            for host in ("127.0.0.1", "[::1]")
        ]
    finally:
        server.stop()

    assert answers == [200, 200]


def test_a_taken_port_is_refused_naming_the_address_and_the_reason():
    first = HttpServer(_app, "127.0.0.1", 0)
    try:
        with pytest.raises(CannotListen) as refused:
            HttpServer(_app, "127.0.0.1", first.port)
    finally:
        first.stop()

    assert str(refused.value) == f"cannot listen on 127.0.0.1:{first.port}: Address already in use"
    assert refused.value.errno == errno.EADDRINUSE


def test_a_port_is_free_again_once_its_server_stopped():
    server = HttpServer(_app, "127.0.0.1", 0)
    port = server.port
    server.start()
    server.stop()

    HttpServer(_app, "127.0.0.1", port).stop()
