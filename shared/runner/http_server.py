"""A threaded WSGI server on its own thread, stoppable from the main thread."""

from __future__ import annotations

import threading
from collections.abc import Callable

from werkzeug.serving import BaseWSGIServer, make_server


class HttpServer:
    def __init__(self, app: Callable, host: str, port: int) -> None:
        # Binds now, so a taken port fails at start-up with the OS's message.
        self._server: BaseWSGIServer = make_server(host, port, app, threaded=True)
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

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop accepting. A request already running, or coming on a kept-alive connection,
        is served on its own thread, and nothing here waits for it: the runner closes its
        services next, so such a request that needs the database gets a 503."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout_s)
        self._server.server_close()
