"""A threaded WSGI server on its own thread, stoppable from the main thread."""

from __future__ import annotations

import contextlib
import functools
import http.client
import json
import socket
import threading
import time
from collections.abc import Callable
from email.message import Message
from typing import BinaryIO

from werkzeug.serving import LISTEN_QUEUE, ThreadedWSGIServer, WSGIRequestHandler

from shared import metrics
from shared.http.errors import shortened
from shared.logging_setup import drop_repeats

# The longest a client may leave its connection silent (before or within a request),
# the longest it may take over its request line and headers, and then over its body:
# each connection holds a thread, and without a limit a client that sends nothing, or
# half a request, holds it until it goes (100 idle sockets held 100 threads), and one
# that sends a byte every few seconds never falls silent for long.
CLIENT_TIMEOUT_S = 30.0
# The most connections served at once. Past it a new one gets a 503 and is closed, so
# that no client, however many connections it opens, grows the threads without bound.
MAX_CONNECTIONS = 128
# The most of a request's body the server reads, the app's reads and its own together.
# After every response werkzeug reads whatever the client still sends, up to 10 GB, so
# that it sees the answer rather than a reset: after a refusal (413) that meant taking
# in a huge body anyway, on a thread the request holds. Past this cap the connection
# is closed instead, and a client still sending may see a reset.
MAX_REQUEST_BYTES = 4 * 1024 * 1024
# A body sent in chunks of one byte takes six bytes a byte on the wire ("1\r\nx\r\n"),
# and then its last chunk and the empty line that ends it (werkzeug reads no trailer
# fields): room for both, so that no body the function would take is cut.
CHUNKED_BYTES_PER_BODY_BYTE = 6
CHUNKED_END_BYTES = len(b"0\r\n\r\n")


def request_cap_for(max_body_bytes: int) -> int:
    """The body cap of a server whose app takes bodies of up to `max_body_bytes`."""
    framed = CHUNKED_BYTES_PER_BODY_BYTE * max_body_bytes + CHUNKED_END_BYTES
    return max(MAX_REQUEST_BYTES, framed)


# The most bytes of header lines a request may send, all of them together. http.server
# limits each line to 64 KiB and their number to 100, which let one request hold 6 MB
# before anything looked at it, its key included, and 128 of them 0.6-1 GB of memory.
# gunicorn, the functions' server, takes 100 lines of 8 KiB at most.
MAX_HEADER_BYTES = 64 * 1024


class CannotListen(OSError):
    """The server's address cannot be bound: a port taken, a host that is not this one's."""


class HttpServer:
    def __init__(
        self,
        app: Callable,
        host: str,
        port: int,
        *,
        listener: socket.socket | None = None,
        client_timeout_s: float = CLIENT_TIMEOUT_S,
        max_connections: int = MAX_CONNECTIONS,
        max_request_bytes: int = MAX_REQUEST_BYTES,
    ) -> None:
        # Binds now, unless handed a socket `listen` bound earlier, so a taken port or an
        # unknown host fails at start-up, saying which.
        if listener is None:
            listener = listen(host, port)
        try:
            self._server = _CountingServer(
                host,
                port,
                app,
                fd=listener.fileno(),
                client_timeout_s=client_timeout_s,
                max_connections=max_connections,
                max_request_bytes=max_request_bytes,
            )
        finally:
            listener.close()  # the server holds a duplicate of its own
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.port

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="http"
        )
        self._thread.daemon = True
        self._thread.start()

    @property
    def connections_in_flight(self) -> int:
        """Connections accepted and not yet served to the end."""
        return self._server.serving

    def stop(self, timeout_s: float = 2.0) -> bool:
        """Stop accepting, then wait up to `timeout_s` for the connections being served to
        be answered; whether they all were. A request still running after that is left
        on its own thread: the runner closes its services next, and such a request that
        then needs the database gets a 503."""
        deadline = time.monotonic() + timeout_s
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(max(0.0, deadline - time.monotonic()))
        self._server.server_close()
        return self._server.wait_until_none_served(max(0.0, deadline - time.monotonic()))


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on host:port. Bound here, not by werkzeug, which on a failure
    prints the OS's words alone ("Name or service not known") and exits the process."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # "::" takes IPv4 too, as werkzeug's own bind left it (create_server alone would
    # make it IPv6 only, and `localhost` then refused).
    dual_stack = family == socket.AF_INET6 and socket.has_dualstack_ipv6()
    try:
        return socket.create_server(
            (host, port), family=family, backlog=LISTEN_QUEUE, dualstack_ipv6=dual_stack
        )
    except OSError as error:
        # The OS's words alone: create_server's message adds the address to them.
        reason = (error.strerror or str(error)).split(" (while attempting to bind", 1)[0]
        refusal = CannotListen(f"cannot listen on {host}:{port}: {reason}")
        refusal.errno = error.errno
        raise refusal from error


class _JsonErrorsRequestHandler(WSGIRequestHandler):
    """werkzeug's handler, answering a request it cannot parse as HTTP (a bad request
    line, a header line over 64 KiB, 100 headers or more) in JSON, as the functions answer
    everything else, rather than in the HTML of Python's http.server."""

    server: _CountingServer

    def parse_request(self) -> bool:
        """Reads the headers; once they are in, their deadline no longer applies. A request
        cut at that deadline is not served: the end of the connection reads as the end of
        its headers, and those that never came (an Idempotency-Key, say) would be missed.

        The body is then read through `_RequestBody`: by a deadline of its own, and up to
        the server's cap."""
        raw = self.rfile
        self.rfile = self._header_lines = _HeaderLines(raw, MAX_HEADER_BYTES)  # type: ignore[assignment]
        try:
            parsed = super().parse_request()
        finally:
            self.rfile = raw
            cut = self.server.headers_read(self.connection)
        if cut:
            self.close_connection = True
            return False
        if parsed and _framed_twice(self.headers):
            # Two lengths, or two codings, disagree on where the body ends: a proxy in
            # front may read it one way and this server another (RFC 9112, 6.3).
            self.send_error(400, "Content-Length or Transfer-Encoding sent twice")
            return False
        if parsed:
            self.rfile = _RequestBody(
                self.rfile,
                self.connection,
                deadline=time.monotonic() + self.server.client_timeout_s,
                max_bytes=self.server.max_request_bytes,
            )
        return parsed

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        reason = self.responses.get(code, ("Error", ""))[0]
        detail = message or reason
        lines = getattr(self, "_header_lines", None)
        if code == 431 and lines is not None and lines.over_budget:
            detail = f"Request header fields over {MAX_HEADER_BYTES} bytes in all"
        detail = shortened(detail)
        # A client's mistake, not ours: below ERROR, which the logs keep for our bugs, and
        # not below WARNING, where configure_logging leaves werkzeug's logger.
        self.log("warning", "code %d, message %s", code, detail)
        body = json.dumps({"detail": detail}).encode()
        if self.request_version == "HTTP/0.9":
            # What http.server assumes until a request line parses: under it, it writes
            # no status line and no headers, and the client would get the body alone.
            self.request_version = self.protocol_version
        self.send_response(code, reason)
        self.send_header("Connection", "close")  # what follows cannot be trusted to frame
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_error(self, format: str, *args: object) -> None:
        """http.server's one use of it here is a client's fault (a request that timed
        out): a WARNING, as the refusals above, not the ERROR kept for our bugs."""
        self.log("warning", format, *args)


class _HeadersOverBudget(http.client.HTTPException):
    """Raised inside http.server's header parsing, which answers it with a 431."""


class _HeaderLines:
    """The request's reader while http.server reads its header lines: it refuses them
    once they pass `budget` bytes in all, before reading further."""

    def __init__(self, raw: BinaryIO, budget: int) -> None:
        self._raw = raw
        self._left = budget
        self.over_budget = False

    def readline(self, limit: int = -1) -> bytes:
        # One byte past what is left, to tell a line that ends the budget from one past it.
        most = self._left + 1 if limit < 0 else min(limit, self._left + 1)
        line = self._raw.readline(most)
        self._left -= len(line)
        if self._left < 0:
            self.over_budget = True
            raise _HeadersOverBudget(f"header fields over {MAX_HEADER_BYTES} bytes")
        return line

    def __getattr__(self, name: str) -> object:
        return getattr(self._raw, name)


def _framed_twice(headers: Message) -> bool:
    return any(len(headers.get_all(name) or []) > 1 for name in _FRAMING_HEADERS)


_FRAMING_HEADERS = ("Content-Length", "Transfer-Encoding")


class _CountingServer(ThreadedWSGIServer):
    """Counts the connections it has accepted and not finished serving. werkzeug answers
    one request per connection and closes it, so a connection is a request; counted from
    its accept to the end of its thread, whatever happens to it in between (a request
    still being read, a client that resets the connection while werkzeug drains it)."""

    def __init__(
        self,
        host: str,
        port: int,
        app: Callable,
        *,
        fd: int,
        client_timeout_s: float,
        max_connections: int,
        max_request_bytes: int,
    ) -> None:
        self.client_timeout_s = client_timeout_s
        self.max_request_bytes = max_request_bytes
        # socketserver sets a handler's `timeout` on its connection; werkzeug then drops a
        # connection whose read times out, as one the client dropped.
        handler = type(
            "_TimedRequestHandler", (_JsonErrorsRequestHandler,), {"timeout": client_timeout_s}
        )
        self._serving = 0
        self._changed = threading.Condition()
        self._max_connections = max_connections
        self._headers_deadline_s = client_timeout_s
        # Connections still sending their request line and headers, with their deadline,
        # and those shut for missing it.
        self._reading_headers: dict[socket.socket, float] = {}
        self._cut: set[socket.socket] = set()
        self._closed = threading.Event()
        super().__init__(host, port, app, handler=handler, fd=fd)
        # werkzeug's __init__ closes the socket it made before taking `fd`'s.
        self._closed.clear()
        threading.Thread(target=self._drop_late_headers, name="http-deadline", daemon=True).start()

    def process_request(self, request: socket.socket, client_address: object) -> None:
        with self._changed:
            busy = self._serving >= self._max_connections
            if not busy:
                self._serving += 1
                self._reading_headers[request] = time.monotonic() + self._headers_deadline_s
        if busy:
            _refuse_as_busy(request)
            metrics.count_connection_refused_as_busy()
            _busy_log.warning(
                "refusing connections: %d already being served", self._max_connections
            )
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)  # starts its thread
        except BaseException:
            self._served(request)
            raise

    def process_request_thread(self, request: socket.socket, client_address: object) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._served(request)

    def headers_read(self, connection: socket.socket) -> bool:
        """The connection's request line and headers are read: whether it was cut first."""
        with self._changed:
            self._reading_headers.pop(connection, None)
            return connection in self._cut

    def _served(self, request: socket.socket) -> None:
        with self._changed:
            self._serving -= 1
            self._reading_headers.pop(request, None)
            self._cut.discard(request)
            self._changed.notify_all()

    def _drop_late_headers(self) -> None:
        """Shut the connections whose headers are not in by their deadline: the thread
        reading them then sees the connection end, as if the client had dropped it. Under
        the lock (a shutdown does not block), so that none whose headers have just come in
        is shut while it is served."""
        while not self._closed.wait(min(1.0, self._headers_deadline_s / 2)):
            now = time.monotonic()
            with self._changed:
                late = [conn for conn, due in self._reading_headers.items() if due < now]
                for connection in late:
                    del self._reading_headers[connection]
                    self._cut.add(connection)
                    with contextlib.suppress(OSError):
                        connection.shutdown(socket.SHUT_RDWR)

    def server_close(self) -> None:
        self._closed.set()
        super().server_close()

    @property
    def serving(self) -> int:
        return self._serving

    def wait_until_none_served(self, timeout_s: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self._serving == 0, timeout=timeout_s)


# Once a minute while it lasts (with how many were dropped): a flood of connections
# must not become a flood of lines.
_busy_log = drop_repeats(f"{__name__}.busy")

_BUSY_BODY = json.dumps({"detail": "Too many connections; retry shortly"}).encode()
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\nRetry-After: 1\r\nConnection: close\r\n\r\n%s"
) % (len(_BUSY_BODY), _BUSY_BODY)


def _refuse_as_busy(connection: socket.socket) -> None:
    """A 503 sent on the accepting thread, which must not wait on a client: one short
    write, given up on at once if the client's window is shut. What the client has sent
    already is read first: closing with it unread would reset the connection, and the
    client might lose the 503."""
    with contextlib.suppress(OSError):
        connection.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            connection.recv(65536)
        connection.send(_BUSY)


class _RequestBody:
    """A request's body as the app and werkzeug read it: ended (as if the client had
    stopped sending) at `deadline`, and after `max_bytes`.

    The socket's own timeout only bounds each wait, so a client sending a byte every few
    seconds would hold its thread for as long as it liked; each read here waits at most
    until the deadline, and reads no more than one receive's worth at a time."""

    def __init__(
        self, raw: BinaryIO, connection: socket.socket, *, deadline: float, max_bytes: int
    ) -> None:
        self._raw = raw
        self._connection = connection
        self._deadline = deadline
        self._left = max_bytes

    def read(self, size: int | None = -1) -> bytes:
        wanted = self._left if size is None or size < 0 else min(size, self._left)
        data = bytearray()
        while len(data) < wanted:
            chunk = self._receive(functools.partial(self._raw.read1, wanted - len(data)))
            if not chunk:
                break
            data += chunk
        return bytes(data)

    def readline(self, size: int | None = -1) -> bytes:
        wanted = self._left if size is None or size < 0 else min(size, self._left)
        line = bytearray()
        while len(line) < wanted and not line.endswith(b"\n"):
            ready = self._receive(functools.partial(self._raw.peek, 1), consumed=False)
            if not ready:
                break
            end = ready.find(b"\n", 0, wanted - len(line))
            take = end + 1 if end >= 0 else min(len(ready), wanted - len(line))
            line += self._raw.read(take)  # already buffered: no wait
            self._left -= take
        return bytes(line)

    def close(self) -> None:
        # socketserver closes the handler's rfile once the request is done.
        self._raw.close()

    def _receive(self, receive: Callable[[], bytes], *, consumed: bool = True) -> bytes:
        """What one receive gives, waited for until the deadline at most; nothing once
        the deadline or the cap is reached, or the client is gone. (Past the deadline
        even what had arrived is not read: the functions read a body as soon as its
        headers are in, well within it.)"""
        remaining = self._deadline - time.monotonic()
        if remaining <= 0 or self._left <= 0:
            return b""
        timeout = self._connection.gettimeout()
        try:
            self._connection.settimeout(remaining)
            data = receive()
        except (TimeoutError, OSError):
            return b""
        finally:
            with contextlib.suppress(OSError):
                self._connection.settimeout(timeout)
        if consumed:
            self._left -= len(data)
        return data
