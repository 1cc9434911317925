"""Where the runner's and the worker processes' HTTP server listens, how it says it
cannot (the socket is bound by us, not by werkzeug, so these are ours to keep), and how
long it waits on a silent client."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import socket
import time
import urllib.request

import pytest
from prometheus_client import REGISTRY

from shared.runner import http_server
from shared.runner.http_server import (
    MAX_HEADER_BYTES,
    CannotListen,
    HttpServer,
    _JsonErrorsRequestHandler,
)
from tests.waiting import wait_until


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


def test_a_client_silent_past_the_timeout_is_dropped_and_frees_its_thread():
    server = HttpServer(_app, "127.0.0.1", 0, client_timeout_s=0.3)
    server.start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as half_sent:
            half_sent.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n")  # headers never ended
            deadline = time.monotonic() + 5
            while server.connections_in_flight == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            held = server.connections_in_flight
            closed_by_server = half_sent.recv(1024) == b""  # waits for the drop, at most 5 s
            dropped_after_s = time.monotonic() - (deadline - 5)
        answered = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/", timeout=5).status
        freed = server.stop()
    finally:
        server.stop()

    assert held == 1
    assert closed_by_server
    assert dropped_after_s < 4
    assert answered == 200
    assert freed


def test_a_request_that_timed_out_is_logged_as_the_clients_fault(caplog):
    # http.server's one use of log_error, when a read outlasts the socket's timeout; the
    # headers' deadline usually drops such a client first, so it is called directly here.
    handler = object.__new__(_JsonErrorsRequestHandler)
    handler.client_address = ("127.0.0.1", 1)
    with caplog.at_level(logging.WARNING, logger="werkzeug"):
        handler.log_error("Request timed out: %r", TimeoutError("timed out"))

    assert [(r.levelno, r.getMessage()[-35:]) for r in caplog.records] == [
        (logging.WARNING, "Request timed out: TimeoutError('timed out')"[-35:])
    ]


def _sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def _raw_exchange(port: int, request: bytes) -> tuple[str, dict[str, str], bytes]:
    """The status line, headers and body the server answers `request` with (it closes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    return status, headers, body


@pytest.mark.parametrize(
    ("request_bytes", "status", "detail"),
    [
        (
            b"GET /moderation_result/ 1 HTTP/1.1\r\nHost: x\r\n\r\n",
            "400",
            "Bad request syntax ('GET /moderation_result/ 1 HTTP/1.1')",
        ),
        (
            b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(100)) + b"\r\n",
            "431",
            "Too many headers",
        ),
        (
            # Two lines, each within http.server's 64 KiB, 80 KB together.
            b"GET / HTTP/1.1\r\nX-A: " + b"a" * 40_000 + b"\r\nX-B: " + b"b" * 40_000 + b"\r\n\r\n",
            "431",
            "Request header fields over 65536 bytes in all",
        ),
        (
            b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n",
            "414",
            "Request-URI Too Long",
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 2\r\n\r\nhello",
            "400",
            "Content-Length or Transfer-Encoding sent twice",
        ),
        # Request lines that leave http.server at HTTP/0.9, which writes no status line.
        (b"GARBAGE\r\n\r\n", "400", "Bad request syntax ('GARBAGE')"),
        (b"GET / HTTP/9.9\r\n\r\n", "505", "Invalid HTTP version (9.9)"),
    ],
    ids=[
        "bad-request-line",
        "too-many-headers",
        "header-bytes-over-budget",
        "request-line-too-long",
        "two-lengths",
        "no-version",
        "unknown-version",
    ],
)
def test_a_request_the_server_cannot_parse_is_refused_in_json(
    request_bytes, status, detail, caplog
):
    server = HttpServer(_app, "127.0.0.1", 0)
    server.start()
    try:
        # Where configure_logging leaves werkzeug's logger, short of DEBUG.
        with caplog.at_level(logging.WARNING, logger="werkzeug"):
            status_line, headers, body = _raw_exchange(server.port, request_bytes)
    finally:
        server.stop()

    # Logged as a client's mistake: ERROR is for the service's own bugs.
    refusals = [r for r in caplog.records if f"code {status}" in r.getMessage()]
    assert [r.levelno for r in refusals] == [logging.WARNING]

    assert status_line.split(" ")[1] == status
    assert headers["Content-Type"] == "application/json"
    assert headers["Connection"] == "close"
    assert json.loads(body) == {"detail": detail}


def test_headers_just_within_the_budget_are_served_whole():
    seen: list[int] = []

    def measuring_app(environ, start_response):
        seen.append(len(environ["HTTP_X_A"]) + len(environ["HTTP_X_B"]))
        return _app(environ, start_response)

    server = HttpServer(measuring_app, "127.0.0.1", 0)
    server.start()
    try:
        lines = b"Host: x\r\nX-A: " + b"a" * 30_000 + b"\r\nX-B: " + b"b" * 30_000 + b"\r\n"
        filler = MAX_HEADER_BYTES - len(lines) - len(b"X-C: \r\n\r\n")
        request = b"GET / HTTP/1.1\r\n" + lines + b"X-C: " + b"c" * filler + b"\r\n\r\n"
        status_line, _, _ = _raw_exchange(server.port, request)
    finally:
        server.stop()

    assert len(request.split(b"\r\n", 1)[1]) == MAX_HEADER_BYTES  # the budget to the byte
    assert status_line.split(" ")[1] == "200"
    assert seen == [60_000]


def test_a_client_trickling_its_headers_is_dropped_at_the_deadline_and_never_served():
    # One byte every 0.1 s never leaves the connection silent for the 0.5 s a read may
    # wait; the deadline for the request line and headers still ends it. Its request is
    # not served: the headers that came (Authorization here) without those that did not.
    served: list[str] = []

    def recording_app(environ, start_response):
        served.append(environ.get("HTTP_X_SLOW", "-"))
        return _app(environ, start_response)

    server = HttpServer(recording_app, "127.0.0.1", 0, client_timeout_s=0.5)
    server.start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as trickle:
            started = time.monotonic()
            dropped = False
            trickle.sendall(b"POST /async_predict?item_id=1 HTTP/1.1\r\nAuthorization: k\r\n")
            for byte in b"X-Slow: " + b"x" * 100:
                try:
                    trickle.sendall(bytes([byte]))
                except OSError:  # reset by the server
                    dropped = True
                    break
                time.sleep(0.1)
                if server.connections_in_flight == 0:
                    dropped = True
                    break
            dropped_after_s = time.monotonic() - started
        answered = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/", timeout=5).status
    finally:
        server.stop()

    assert dropped
    assert 0.4 < dropped_after_s < 6
    assert answered == 200
    assert served == ["-"]  # the request that came after it, alone


def test_connections_past_the_limit_get_a_json_503_and_the_server_stays_up(caplog):
    refused_before = _sample("moderation_http_connections_refused_total")
    server = HttpServer(_app, "127.0.0.1", 0, max_connections=2)
    server.start()
    silent = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(2)]
    try:
        deadline = time.monotonic() + 5
        while server.connections_in_flight < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        status_line, headers, body = _raw_exchange(server.port, b"GET / HTTP/1.1\r\n\r\n")
        for connection in silent:
            connection.close()
        deadline = time.monotonic() + 5
        while server.connections_in_flight > 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        answered = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/", timeout=5).status
    finally:
        for connection in silent:
            connection.close()
        server.stop()

    assert status_line.split(" ")[1] == "503"
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"detail": "Too many connections; retry shortly"}
    assert answered == 200
    assert _sample("moderation_http_connections_refused_total") == refused_before + 1
    busy_lines = [r for r in caplog.records if r.name == "shared.runner.http_server.busy"]
    assert [r.getMessage() for r in busy_lines] == ["refusing connections: 2 already being served"]


def test_a_client_trickling_its_body_is_cut_at_the_deadline_and_frees_its_thread():
    # One byte every 0.1 s never leaves the connection silent for the 0.5 s a read may
    # wait; the request's deadline still ends the body, as if the client had stopped.
    bodies: list[int] = []

    def reading_app(environ, start_response):
        bodies.append(len(environ["wsgi.input"].read(100)))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    server = HttpServer(reading_app, "127.0.0.1", 0, client_timeout_s=0.5)
    server.start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as trickle:
            started = time.monotonic()
            trickle.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
            for _ in range(60):
                try:
                    trickle.sendall(b"x")
                except OSError:  # the server closed the connection
                    break
                time.sleep(0.1)
                if bodies:
                    break
            answered_after_s = time.monotonic() - started
        wait_until(
            lambda: server.connections_in_flight == 0, timeout_s=5, what="the connection freed"
        )
    finally:
        server.stop()

    assert len(bodies) == 1 and 0 < bodies[0] < 100
    assert answered_after_s < 3


def test_after_a_refusal_the_server_reads_no_more_than_its_cap_of_the_body():
    # werkzeug reads what a client still sends after the response, up to 10 GB: a 413
    # would then take the whole body in anyway. Past the cap the connection is closed.
    def refusing_app(environ, start_response):
        start_response("413 Payload Too Large", [("Content-Type", "application/json")])
        return [b'{"detail": "too large"}']

    declared = 100 * 1024 * 1024
    server = HttpServer(refusing_app, "127.0.0.1", 0, max_request_bytes=256 * 1024)
    server.start()
    sent = 0
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as client:
            client.sendall(
                f"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {declared}\r\n\r\n".encode()
            )
            chunk = b"\0" * 65536
            with contextlib.suppress(OSError):  # reset, or a send left waiting: both end it
                while sent < declared:
                    client.sendall(chunk)
                    sent += len(chunk)
        wait_until(
            lambda: server.connections_in_flight == 0, timeout_s=5, what="the connection freed"
        )
    finally:
        server.stop()

    # What the kernel's buffers on both ends hold, at most; the whole body was 100 MiB.
    assert sent < 32 * 1024 * 1024


def test_a_request_served_leaves_no_traceback_on_stderr(capfd):
    # socketserver prints a request's unhandled error straight to stderr, outside the
    # log; closing the request's body must not be one.
    def reading_app(environ, start_response):
        environ["wsgi.input"].read(5)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    server = HttpServer(reading_app, "127.0.0.1", 0)
    server.start()
    try:
        request = urllib.request.Request(
            f"http://127.0.0.1:{server.port}/", data=b"hello", method="POST"
        )
        status = urllib.request.urlopen(request, timeout=5).status
        wait_until(
            lambda: server.connections_in_flight == 0, timeout_s=5, what="the connection freed"
        )
    finally:
        server.stop()

    assert status == 200
    assert "Traceback" not in capfd.readouterr().err


def test_a_chunked_body_reads_whole_through_the_servers_bounds():
    def echoing_app(environ, start_response):
        body = environ["wsgi.input"].read()
        headers = [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(body)))]
        start_response("200 OK", headers)
        return [body]

    server = HttpServer(echoing_app, "127.0.0.1", 0, max_request_bytes=64 * 1024)
    server.start()
    try:
        status_line, _, body = _raw_exchange(
            server.port,
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\n",
        )
    finally:
        server.stop()

    assert status_line.split(" ")[1] == "200"
    assert body == b"hello world"


@pytest.mark.parametrize("body_bytes", [1, 100])
def test_a_body_as_large_as_the_app_takes_passes_the_cap_in_one_byte_chunks(
    monkeypatch, body_bytes
):
    # The fixed cap would hide the rule: it is the larger of the two.
    monkeypatch.setattr(http_server, "MAX_REQUEST_BYTES", 0)
    received: list[int] = []

    def reading_app(environ, start_response):
        received.append(len(environ["wsgi.input"].read()))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    server = HttpServer(
        reading_app, "127.0.0.1", 0, max_request_bytes=http_server.request_cap_for(body_bytes)
    )
    server.start()
    try:
        status_line, _, _ = _raw_exchange(
            server.port,
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"1\r\nx\r\n" * body_bytes
            + b"0\r\n\r\n",
        )
    finally:
        server.stop()

    assert status_line.split(" ")[1] == "200"
    assert received == [body_bytes]


def test_a_chunked_bodys_framing_counts_against_the_servers_cap():
    # One-byte chunks take six bytes each ("1\r\nx\r\n"): counted by their data alone, a
    # client could send six times the cap through the size lines werkzeug reads.
    outcome: list[int | str] = []

    def reading_app(environ, start_response):
        try:
            outcome.append(len(environ["wsgi.input"].read()))
        except OSError:  # the body ended at the cap, inside its chunked framing
            outcome.append("cut at the cap")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    server = HttpServer(reading_app, "127.0.0.1", 0, max_request_bytes=600)
    server.start()
    try:
        _raw_exchange(
            server.port,
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"1\r\nx\r\n" * 200
            + b"0\r\n\r\n",
        )
    finally:
        server.stop()

    assert outcome == ["cut at the cap"]
