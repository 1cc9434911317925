"""HTTP-level errors and their JSON bodies: every error is `{"detail": ...}`."""

from __future__ import annotations

import json
import logging
from typing import Any

import flask
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException, NotFound

from shared.errors import TemporaryError, public_reason
from shared.invalid_settings import InvalidSettings
from shared.logging_setup import drop_repeats

log = logging.getLogger(__name__)


class HttpError(Exception):
    """An error with the status and detail the caller should see."""

    def __init__(self, status: int, detail: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail if isinstance(detail, str) else json.dumps(detail))
        self.status = status
        self.detail = detail
        self.headers = headers or {}


class BodyLeftUnread(HttpError):
    """A refusal made without reading the rest of the body (too large, or not all there):
    its response must not let the server try to read it afterwards."""


# The most of a client's own text (a path, a header) an error body quotes back: its
# start says what was asked, and a 60 KB header is not worth echoing whole.
QUOTED_CHARS = 200


def shortened(text: str, limit: int = QUOTED_CHARS) -> str:
    """`text`, or its first `limit` characters and how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


def json_error(status: int, detail: Any, headers: dict[str, str] | None = None) -> flask.Response:
    response = flask.Response(
        json.dumps({"detail": detail}), status=status, mimetype="application/json"
    )
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


# A 422 lists at most this many problems, and then says how many more there were: one
# body of 25,000 unknown fields would otherwise be answered in 2 MB.
MAX_LISTED_ERRORS = 20


def field_errors(error: ValidationError) -> list[dict[str, Any]]:
    """One entry per field: where, what was wrong. The input itself is left out (it may be huge)."""
    listed = listed_issues(error)
    return cut_short(listed, error.error_count())


def listed_issues(error: ValidationError) -> list[dict[str, Any]]:
    """The first MAX_LISTED_ERRORS of `error`'s issues, each as a 422 lists it."""
    issues = error.errors(include_url=False, include_context=False, include_input=False)
    return [
        {"loc": list(issue["loc"]), "msg": issue["msg"], "type": issue["type"]}
        for issue in issues[:MAX_LISTED_ERRORS]
    ]


def cut_short(listed: list[dict[str, Any]], total: int) -> list[dict[str, Any]]:
    """`listed`, and when `total` is more, an entry saying how many were left out."""
    if total <= len(listed):
        return listed
    more = total - len(listed)
    return [*listed, {"loc": [], "msg": f"and {more} more errors", "type": "too_many_errors"}]


def json_http_exception(error: HTTPException) -> flask.Response:
    """Flask's own errors (a path its router cannot match, say) as JSON too, not HTML."""
    if isinstance(error, NotFound) and error.description == NotFound.description:
        # werkzeug's own words ("If you entered the URL manually please check your
        # spelling") are for a web page. functions-framework routes every path to the
        # function but one holding a line break, which its router cannot match.
        return json_error(404, "Not found: nothing is served at this path")
    return json_error(error.code or 500, error.description or error.name)


def json_internal_error(error: Exception) -> flask.Response:
    """An exception no handler caught, as JSON: functions-framework's own handler of 500
    answers in HTML."""
    log.error("unhandled error in an HTTP function", exc_info=error)
    # The header functions-framework's own handler sets, which its platform logs as a crash.
    return json_error(500, "Internal server error", {"X-Google-Status": "crash"})


def leaving_the_body_unread(response: flask.Response) -> flask.Response:
    """`response`, streamed. functions-framework reads the whole request after every
    response that is not streamed (its `read_request` hook), with no limit: for a body
    declared at 10 MB that meant taking in 10 MB only to refuse them, and for one shorter
    than its Content-Length, a second failed read that turned the 400 into a 500. A
    streamed response skips that, and gunicorn discards whatever of the body still comes."""
    payload = response.get_data()
    streamed = flask.Response(iter([payload]), status=response.status_code)
    streamed.headers = response.headers.copy()
    streamed.headers["Content-Length"] = str(len(payload))
    return streamed


def register_json_errors(errorhandler: Any) -> None:
    """Register on the app functions-framework is building (`functions_framework.errorhandler`).

    Their responses leave the body unread: the paths they answer for (/robots.txt and
    /favicon.ico, which functions-framework answers with a 404 of its own, and a path
    its router cannot match) are outside MAX_BODY_BYTES, and a chunked body of a GiB
    to one of them was held in memory to answer its 404."""
    errorhandler(HTTPException)(lambda error: leaving_the_body_unread(json_http_exception(error)))
    errorhandler(Exception)(lambda error: leaving_the_body_unread(json_internal_error(error)))


def unavailable(
    error: TemporaryError, retry_after_s: int, *, route: str, path: str
) -> flask.Response:
    """503 naming which dependency is down, and no more: its message may hold paths,
    bucket names or versions, which go to the log, not to an anonymous caller. The log
    line names the route and the request's path and query (its item or task id)."""
    log.warning(
        "temporarily unavailable", extra={"error": str(error), "route": route, "path": path}
    )
    return json_error(
        503,
        f"Temporarily unavailable, retry later: {public_reason(error)}",
        {"Retry-After": str(retry_after_s)},
    )


def misconfigured(error: InvalidSettings, detail: str = "Internal server error") -> flask.Response:
    """The 500 of a function whose settings do not validate; the reason (naming the
    settings, quoting no secret) goes to the log."""
    # They fail every request until the function is redeployed: their reason once a
    # minute, not a traceback per request.
    drop_repeats(f"{__name__}.settings").error("the function's settings do not validate: %s", error)
    return json_error(500, detail)
