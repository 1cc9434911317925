"""The wrapper the API functions and the relay go through: method, API key, body size,
error mapping.

It is the one place that turns the service's exceptions into their statuses, so a
handler only parses, calls `shared`, and returns a pydantic model. The push consumer
answers its platform, not an API client, with statuses of its own
(shared/http/pushed_record.py), built from the parts below.
"""

from __future__ import annotations

import functools
import logging
import re
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
# The longest query string taken. Ours hold one `item_id`; one of a megabyte took ~0.2 s
# of the worker's time to parse before any check could refuse it.
MAX_QUERY_BYTES = 4096


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
        return misconfigured(error)
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
        return json_error(500, "Internal server error")
    if isinstance(result, BaseModel):
        result = JsonResult(result)
    response = flask.Response(
        result.body.model_dump_json(), status=result.status, mimetype="application/json"
    )
    response.headers.update(result.headers)
    return response


def refusal_leaving_the_body_unread(error: HttpError) -> flask.Response:
    """The refusal as a streamed response, which the body's remaining bytes never reach."""
    return leaving_the_body_unread(json_error(error.status, error.detail, error.headers))


def require_method(request: flask.Request, methods: tuple[str, ...]) -> None:
    """`BodyLeftUnread` with 405 and `Allow` for a method the function does not take."""
    if request.method not in methods:
        raise BodyLeftUnread(
            405,
            f"Method {request.method} not allowed; use {', '.join(methods)}",
            {"Allow": ", ".join(methods)},
        )


def require_short_query(request: flask.Request) -> None:
    """`BodyLeftUnread` with 414 for a query string over MAX_QUERY_BYTES, before anything
    parses it."""
    length = len(request.query_string)
    if length > MAX_QUERY_BYTES:
        raise BodyLeftUnread(414, f"Query string of {length} bytes is over {MAX_QUERY_BYTES}")


_DECIMAL_LENGTH = re.compile(r"[ \t]*[0-9]+[ \t]*")


def read_body_within(request: flask.Request, max_bytes: int) -> bytes:
    """The whole body (cached on the request), or `BodyLeftUnread` with 413 when it is
    over `max_bytes` and 400 when it ends before its Content-Length or declares two
    lengths."""
    if request.headers.get("Transfer-Encoding") and request.headers.get("Content-Length"):
        # Two framings disagree on where the body ends, which is how requests are smuggled
        # past a proxy (RFC 9112, section 6.3). gunicorn refuses these itself; werkzeug's
        # server, the runner's, followed the chunks.
        raise BodyLeftUnread(400, "Content-Length sent with Transfer-Encoding: send one of them")
    length = request.content_length
    if length == 0:
        # werkzeug reads a Content-Length that is not a number (gunicorn refuses those
        # itself) as 0: the client then hears that its length is wrong, not its JSON.
        declared = request.headers.get("Content-Length", "0")
        if not _DECIMAL_LENGTH.fullmatch(declared):
            raise BodyLeftUnread(400, f"Content-Length is not a number of bytes: {declared[:40]!r}")
        return b""  # a declared empty body (a chunked one has no length): nothing to read
    if length is not None and length > max_bytes:
        raise BodyLeftUnread(413, f"Request body of {length} bytes is over {max_bytes}")
    # A chunked body has no length up front. werkzeug's limit ends the read at the limit
    # without a word, so the read goes one byte past it, and that byte tells. Its
    # wrapper also turns a connection reset mid-body into a 400.
    request.max_content_length = max_bytes + 1
    try:
        body = request.get_data(cache=True)
    except Exception as error:  # werkzeug's RequestEntityTooLarge, or its BadRequest
        if getattr(error, "code", None) == 413:
            raise BodyLeftUnread(413, f"Request body is over {max_bytes} bytes") from None
        if getattr(error, "code", None) == 400:
            # Shorter than its Content-Length, or a broken chunked encoding.
            raise BodyLeftUnread(400, "Request body could not be read in full") from None
        raise
    if len(body) > max_bytes:
        raise BodyLeftUnread(413, f"Request body is over {max_bytes} bytes")
    if length is not None and len(body) < length:
        # gunicorn ends its input at the Content-Length itself, and werkzeug's limit, set
        # above that, then hands over what came before the client stopped, without a word.
        raise BodyLeftUnread(400, "Request body could not be read in full")
    return body
