"""A WSGI app that hands each request, by its path, to the app that owns that path.

It only chooses; the functions-framework apps behind it do all the handling, so
the runner serves exactly the code that is deployed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from shared import metrics
from shared.http.errors import shortened

UNMATCHED_ROUTE = "unmatched"  # the route label of a request for a path no app serves

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@dataclass(frozen=True, slots=True)
class Route:
    path: str
    app: WsgiApp
    # Also serve `path/...` (a path parameter, or static files under a prefix).
    with_subpaths: bool = False

    def matches(self, path: str) -> bool:
        # `path/` too, as a function deployed alone takes it (its every path is its own).
        return path in (self.path, self.path + "/") or (
            self.with_subpaths and path.startswith(self.path + "/")
        )


class PathDispatcher:
    """Route by exact path (or path prefix, where a route says so); 404 JSON otherwise."""

    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes = list(routes)

    def app_for(self, path: str) -> WsgiApp | None:
        for route in self.routes:
            if route.matches(path):
                return route.app
        return None

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        app = self.app_for(path)
        if app is None:
            return self._not_found(path, start_response, environ)
        return app(environ, start_response)

    def _not_found(
        self, path: str, start_response: Callable[..., Any], environ: dict[str, Any]
    ) -> Iterable[bytes]:
        started = time.perf_counter()
        known = ", ".join(route.path for route in self.routes)
        detail = f"No endpoint at {shortened(path)}; known paths: {known}"
        body = json.dumps({"detail": detail}).encode()
        # Counted under one fixed route: a label per path a client makes up would grow
        # without bound.
        metrics.observe_request(UNMATCHED_ROUTE, 404, time.perf_counter() - started)
        start_response(
            "404 NOT FOUND",
            [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
        )
        # A HEAD is answered with the headers alone, as the functions answer it.
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]
