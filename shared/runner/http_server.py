"""A threaded WSGI server on its own thread, stoppable from the main thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wsgi import ClosingIterator


class HttpServer:
    def __init__(self, app: Callable, host: str, port: int) -> None:
        self._requests = _RequestsInFlight(app)
        # Binds now, so a taken port fails at start-up with the OS's message.
        self._server: BaseWSGIServer = make_server(host, port, self._requests, threaded=True)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_port

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="http"
        )
        self._thread.daemon = True
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> bool:
        """Stop accepting, then wait up to `timeout_s` for the requests being served to be
        answered; whether they all were. (werkzeug closes every connection after its
        response, so no kept-alive client brings more.) A request still running after
        that is left on its own thread: the runner closes its services next, and such a
        request that then needs the database gets a 503."""
        deadline = time.monotonic() + timeout_s
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(max(0.0, deadline - time.monotonic()))
        self._server.server_close()
        return self._requests.wait_until_none(max(0.0, deadline - time.monotonic()))


class _RequestsInFlight:
    """The WSGI app, counting the requests it has not finished answering."""

    def __init__(self, app: Callable) -> None:
        self._app = app
        self._count = 0
        self._changed = threading.Condition()

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        with self._changed:
            self._count += 1
        try:
            body = self._app(environ, start_response)
        except BaseException:
            self._finished()
            raise
        # Finished once werkzeug has written the body and closes the iterable.
        return ClosingIterator(body, self._finished)

    def _finished(self) -> None:
        with self._changed:
            self._count -= 1
            self._changed.notify_all()

    def wait_until_none(self, timeout_s: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self._count == 0, timeout=timeout_s)
