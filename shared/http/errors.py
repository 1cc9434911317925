"""HTTP-level errors and their JSON bodies: every error is `{"detail": ...}`."""

from __future__ import annotations

import json
from typing import Any

import flask
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException


class HttpError(Exception):
    """An error with the status and detail the caller should see."""

    def __init__(self, status: int, detail: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail if isinstance(detail, str) else json.dumps(detail))
        self.status = status
        self.detail = detail
        self.headers = headers or {}


def json_error(status: int, detail: Any, headers: dict[str, str] | None = None) -> flask.Response:
    response = flask.Response(
        json.dumps({"detail": detail}), status=status, mimetype="application/json"
    )
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def field_errors(error: ValidationError) -> list[dict[str, Any]]:
    """One entry per field: where, what was wrong. The input itself is left out (it may be huge)."""
    return [
        {"loc": list(issue["loc"]), "msg": issue["msg"], "type": issue["type"]}
        for issue in error.errors(include_url=False, include_context=False, include_input=False)
    ]


def json_http_exception(error: HTTPException) -> flask.Response:
    """Flask's own errors (a path its router cannot match, say) as JSON too, not HTML."""
    return json_error(error.code or 500, error.description or error.name)


def register_json_errors(errorhandler: Any) -> None:
    """Register on the app functions-framework is building (`functions_framework.errorhandler`)."""
    errorhandler(HTTPException)(json_http_exception)
