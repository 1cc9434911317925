"""The checks every request passes before its handler reads it: method, query length,
body size and framing. Each refusal leaves the rest of the body unread (`BodyLeftUnread`),
so that refusing a large body never means taking it in."""

from __future__ import annotations

import re

import flask

from shared.http.errors import BodyLeftUnread, HttpError, json_error, leaving_the_body_unread

# The longest query string taken. Ours hold one `item_id`; one of a megabyte took ~0.2 s
# of the worker's time to parse before any check could refuse it.
MAX_QUERY_BYTES = 4096


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
