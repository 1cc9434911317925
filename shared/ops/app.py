"""The operations endpoints as one small Flask app: /healthz, /readyz, /metrics,
/openapi.json and /docs. The runner mounts it next to the functions; the consumer
and relay entry points serve it on their own port for their health checks."""

from __future__ import annotations

from collections.abc import Callable, Collection

import flask
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from werkzeug.exceptions import HTTPException

from shared import metrics
from shared.bootstrap import Services
from shared.ops.docs import docs_page, swagger_ui_dir
from shared.ops.health import CHECKS, check_readiness
from shared.ops.openapi import build_openapi_document

# (path, serves subpaths too): what a path dispatcher routes to this app.
OPS_PATHS = (
    ("/healthz", False),
    ("/readyz", False),
    ("/metrics", False),
    ("/openapi.json", False),
    ("/docs", True),
)


def create_ops_app(
    services: Callable[[], Services], readiness_checks: Collection[str] = tuple(CHECKS)
) -> flask.Flask:
    """`services` is called per request, so the app can be built before the services are;
    /readyz runs `readiness_checks` (a relay, say, does not need the model)."""
    app = flask.Flask("ops", static_folder=None)
    # A path with `//` is not redirected to its merged form: Flask's redirect is an HTML
    # page whose Location is built from the request's Host header.
    app.url_map.merge_slashes = False

    @app.get("/healthz")
    def healthz() -> flask.Response:
        # Liveness only: this process answers. Dependencies belong to /readyz.
        return flask.jsonify(status="ok")

    @app.get("/readyz")
    def readyz() -> flask.Response:
        checks = check_readiness(services(), names=readiness_checks)
        ready = all(check.ok for check in checks.values())
        body = {
            "status": "ready" if ready else "unavailable",
            "checks": {name: {"ok": c.ok, "detail": c.detail} for name, c in checks.items()},
        }
        return flask.make_response(flask.jsonify(body), 200 if ready else 503)

    @app.get("/metrics")
    def prometheus_metrics() -> flask.Response:
        if "model" in readiness_checks:
            _record_model_version(services())
        # content_type, not mimetype: Flask would add a second charset to the one it has.
        return flask.Response(generate_latest(), content_type=CONTENT_TYPE_LATEST)

    @app.get("/openapi.json")
    def openapi() -> flask.Response:
        return flask.jsonify(build_openapi_document())

    @app.get("/docs")
    def docs() -> flask.Response:
        page = docs_page(static_prefix="/docs/static", openapi_url="/openapi.json")
        return flask.Response(page, mimetype="text/html")

    @app.get("/docs/static/<path:filename>")
    def docs_static(filename: str) -> flask.Response:
        return flask.send_from_directory(swagger_ui_dir(), filename)

    @app.errorhandler(HTTPException)
    def json_http_error(error: HTTPException) -> flask.Response:
        response = flask.jsonify(detail=f"{error.name}: {flask.request.path}")
        response.status_code = error.code or 500
        if error.code == 405:
            response.headers["Allow"] = "GET, HEAD"
        return response

    return app


def _record_model_version(services: Services) -> None:
    # Only a model already loaded: a scrape must not wait for a load.
    model = services.model.loaded()
    if model is not None:
        metrics.record_model_version(model.version)
