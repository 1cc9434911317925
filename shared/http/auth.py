"""API keys: with API_KEYS set, every request needs one of them."""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading

import flask

from shared.http.errors import BodyLeftUnread

log = logging.getLogger(__name__)


def require_api_key(request: flask.Request, keys: list[str]) -> None:
    """Accept `Authorization: Bearer <key>` or `X-API-Key: <key>`; no keys configured means open."""
    if not keys:
        warn_that_the_api_is_open()
        return
    if _matching_key(request, keys) is None:
        # Refused before the body is read, so the server must not read it afterwards.
        raise BodyLeftUnread(
            401,
            "Missing or invalid API key: send Authorization: Bearer <key> or X-API-Key",
            {"WWW-Authenticate": "Bearer"},
        )


_open_api_warned = threading.Event()
_open_api_lock = threading.Lock()


def warn_that_the_api_is_open() -> None:
    """Once per process, at its first request: open is the default, which suits a laptop
    and nothing reachable from elsewhere."""
    if _open_api_warned.is_set():  # every request of an open API comes here
        return
    with _open_api_lock:
        if _open_api_warned.is_set():
            return
        log.warning(
            "API_KEYS is empty: this process serves its API to anyone who can reach it;"
            " set API_KEYS unless a gateway in front of it checks callers"
        )
        _open_api_warned.set()


def forget_the_open_api_warning() -> None:
    """For tests: behave as a process that has warned of nothing yet."""
    _open_api_warned.clear()


def caller_scope(request: flask.Request, keys: list[str]) -> str | None:
    """Who is calling, for what is theirs alone (their idempotency keys): a digest of the
    API key that let the request in, or None when the API is open. Not the key itself,
    which then would be stored in the database in clear."""
    if not keys:
        return None
    return hashlib.sha256((_matching_key(request, keys) or "").encode()).hexdigest()[:16]


_OWS = " \t"


def _matching_key(request: flask.Request, keys: list[str]) -> str | None:
    """The first presented key that is one of `keys`: X-API-Key's, then the Bearer token.

    Either header may carry a token that is not ours: a platform that checks callers
    itself (Cloud Run's IAM, an API gateway) takes `Authorization: Bearer` for its own
    token, and its callers then give our key in X-API-Key."""
    # Stripped of the spaces and tabs HTTP allows around a value (RFC 9110, 5.5), as
    # gunicorn strips them; werkzeug's server (the runner) does not. str.strip() would
    # take more: a no-break space, say, which is no part of HTTP's whitespace.
    presented = [request.headers.get("X-API-Key", "").strip(_OWS)]
    authorization = request.headers.get("Authorization", "")
    if authorization[:7].lower() == "bearer ":
        presented.append(authorization[7:].strip(_OWS))
    matching = None
    # Every presented value against every key, in constant time and with no early
    # exit, so that timing tells nothing about the keys.
    for candidate in presented:
        for key in keys:
            if hmac.compare_digest(candidate.encode(), key.encode()) and candidate:
                matching = matching or key
    return matching
