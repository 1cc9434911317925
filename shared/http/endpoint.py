"""The wrapper the API functions and the relay go through: method, API key, body size,
error mapping.

It is the one place that turns the service's exceptions into their statuses, so a
handler only parses, calls `shared`, and returns a pydantic model. The push consumer
answers its platform, not an API client, with statuses of its own
(shared/http/pushed_record.py), after the same request checks (request_limits.py).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import flask
from pydantic import BaseModel

from shared import metrics
from shared.bootstrap import get_services
from shared.errors import (
    AdNotFound,
    IdempotencyKeyReused,
    InvalidFeatures,
    TaskNotFound,
    TemporaryError,
)
from shared.http.auth import require_api_key
from shared.http.errors import (
    BodyLeftUnread,
    HttpError,
    json_error,
    leaving_the_body_unread,
    misconfigured,
    shortened,
    unavailable,
)
from shared.http.request_limits import (
    read_body_within,
    refusal_leaving_the_body_unread,
    require_method,
    require_short_query,
)
from shared.invalid_settings import InvalidSettings

log = logging.getLogger(__name__)


@dataclass
class JsonResult:
    """A body with a status other than 200, or extra headers."""

    body: BaseModel
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[flask.Request], BaseModel | JsonResult]


def json_endpoint(route: str, *, methods: tuple[str, ...]) -> Callable[[Handler], Callable]:
    """Wrap a handler: it receives a request and returns a model; errors become JSON."""

    def decorate(handler: Handler) -> Callable[[flask.Request], flask.Response]:
        metrics.declare_route(route)

        @functools.wraps(handler)
        def endpoint(request: flask.Request) -> flask.Response:
            started = time.perf_counter()
            response = _respond(route, handler, request, methods)
            metrics.observe_request(route, response.status_code, time.perf_counter() - started)
            return response

        return endpoint

    return decorate


# A caller's path may run to a megabyte (functions-framework lifts gunicorn's request
# line limit, and gunicorn then stops at 1 MiB); a log line keeps its start, which says
# what was asked.
LOGGED_PATH_CHARS = 256


def _path_and_query(request: flask.Request) -> str:
    """For a log line: the path, and the query only if there is one, cut to
    LOGGED_PATH_CHARS."""
    query = request.query_string.decode("latin-1")
    path_and_query = f"{request.path}?{query}" if query else request.path
    return shortened(path_and_query, LOGGED_PATH_CHARS)


def _respond(
    route: str, handler: Handler, request: flask.Request, methods: tuple[str, ...]
) -> flask.Response:
    try:
        # Inside the try: settings that do not validate are a 500 in JSON like any other.
        settings = get_services().settings
        require_method(request, methods)
        require_api_key(request, settings.api_key_list)
        require_short_query(request)
        read_body_within(request, settings.max_body_bytes)
        result = handler(request)
    except BodyLeftUnread as error:
        return refusal_leaving_the_body_unread(error)
    except HttpError as error:
        return json_error(error.status, error.detail, error.headers)
    except (AdNotFound, TaskNotFound) as error:
        return json_error(404, str(error))
    except IdempotencyKeyReused as error:
        return json_error(422, str(error))
    except InvalidFeatures as error:
        # A stored ad the model cannot score (a body's fields are refused before this):
        # the request is fine, the ad it names is not.
        return json_error(422, f"The ad cannot be scored: {error}")
    except InvalidSettings as error:
        # Streamed, as the refusals are: raised before the body is read, and
        # functions-framework would otherwise read all of it, with no limit, to answer.
        return leaving_the_body_unread(misconfigured(error))
    except TemporaryError as error:
        # Raised after the services were built, so their settings are there to read.
        return unavailable(
            error, get_services().settings.retry_after_s, route=route, path=_path_and_query(request)
        )
    except Exception:
        # A bug, not the caller's fault; logged with its traceback, answered as JSON.
        log.exception(
            "unhandled error in an HTTP handler",
            extra={"route": route, "path": _path_and_query(request)},
        )
        return leaving_the_body_unread(json_error(500, "Internal server error"))
    if isinstance(result, BaseModel):
        result = JsonResult(result)
    response = flask.Response(
        result.body.model_dump_json(), status=result.status, mimetype="application/json"
    )
    response.headers.update(result.headers)
    return response
