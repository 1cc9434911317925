"""Turning a request's body, query string or path into a validated pydantic model."""

from __future__ import annotations

import json
import sys
from typing import TypeVar

import flask
from pydantic import BaseModel, ValidationError

from shared.http.errors import (
    MAX_LISTED_ERRORS,
    HttpError,
    cut_short,
    field_errors,
    listed_issues,
    shortened,
)

Model = TypeVar("Model", bound=BaseModel)


def parse_json_body(request: flask.Request, model: type[Model]) -> Model:
    """400 for a body that is not JSON, 415 for another content type or a compressed
    body, 422 for bad fields."""
    if request.mimetype != "application/json":
        found = shortened(request.content_type or "none")
        raise HttpError(415, f"Expected Content-Type: application/json, got {found}")
    _refuse_content_coding(request)
    raw = request.get_data(cache=True)
    try:
        # JSON between systems is UTF-8 (RFC 8259), which may open with a byte order
        # mark for the parser to ignore; one decoder serves every request. A `charset`
        # parameter has no effect on JSON (RFC 8259, section 11), so it is not read.
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        # The codec counts from after a byte order mark; the client counts from the start.
        position = error.start + len(raw) - len(error.object)
        raise HttpError(
            400,
            f"Request body is not UTF-8, which JSON must be: byte 0x{raw[position]:02x}"
            f" at position {position} cannot start or continue a character",
        ) from None
    try:
        document = _DECODER.decode(text)
    except json.JSONDecodeError as error:
        raise HttpError(400, f"Request body is not valid JSON: {error}") from None
    except _NotJson as error:
        raise HttpError(400, f"Request body is not valid JSON: {error}") from None
    except ValueError:
        # What is left: an integer of more digits than Python converts, whose own
        # message advises sys.set_int_max_str_digits(), which a client cannot use.
        limit = sys.get_int_max_str_digits()
        raise HttpError(
            400, f"Request body is not valid JSON: an integer of more than {limit:,} digits"
        ) from None
    except RecursionError:
        # `[[[[...]]]]` a few thousand deep fits in the body limit but not in the stack.
        raise HttpError(400, "Request body is JSON nested too deeply") from None
    if not isinstance(document, dict):
        raise HttpError(422, f"Expected a JSON object, got {type(document).__name__}")
    if isinstance(document, _NamesRepeated):
        raise HttpError(422, [_repeated(*document.repeated)])
    _refuse_many_unknown_fields(model, document)
    return _validate(model, document)


def _refuse_content_coding(request: flask.Request) -> None:
    """415 for a compressed body: the body would otherwise be parsed as it came, and the
    client told that its JSON is broken (RFC 9110, section 15.5.16, names the status and
    the header that says what is taken). A compressing transfer coding is refused alike:
    gunicorn and werkzeug take `Transfer-Encoding: gzip, chunked` and hand the body on
    still compressed."""
    # Both read from the environ, on every request: werkzeug's header lookup costs ~0.4 µs.
    coding = request.environ.get("HTTP_CONTENT_ENCODING", "").strip()
    if coding and coding.lower() != "identity":
        raise HttpError(
            415,
            f"Content-Encoding {coding[:40]!r} is not accepted: send the body uncompressed",
            {"Accept-Encoding": "identity"},
        )
    transfer = request.environ.get("HTTP_TRANSFER_ENCODING")
    if transfer is not None and transfer.lower() != "chunked" and _compressing(transfer):
        raise HttpError(
            415,
            f"Transfer-Encoding {transfer.strip()[:40]!r} is not accepted: send the body "
            "uncompressed, chunked or with a Content-Length",
            {"Accept-Encoding": "identity"},
        )


# The transfer codings a body may come in: none, "identity" (obsolete), and chunked.
_PLAIN_TRANSFER_CODINGS = frozenset(("", "identity", "chunked"))


def _compressing(transfer_encoding: str) -> bool:
    codings = transfer_encoding.split(",")
    return any(coding.strip().lower() not in _PLAIN_TRANSFER_CODINGS for coding in codings)


def _refuse_many_unknown_fields(model: type[BaseModel], document: dict[str, object]) -> None:
    """422 before validation for a body of more unknown fields than a 422 lists: pydantic
    would build an error for each (25,000 of them took ~120 ms), only to be cut short."""
    if model.model_config.get("extra") != "forbid":
        return
    if len(document) <= len(model.model_fields) + MAX_LISTED_ERRORS:
        return  # few enough to validate as usual, in one list with the other errors
    unknown = [name for name in document if name not in model.model_fields]
    if len(unknown) > MAX_LISTED_ERRORS:
        # The model's own fields are few: validated alone, they give their errors (a
        # missing or a bad field) first, as a whole validation lists them, and the count
        # of what is left out stays exact.
        known = {name: value for name, value in document.items() if name in model.model_fields}
        try:
            model.model_validate(known)
            listed, total = [], 0
        except ValidationError as error:
            listed, total = listed_issues(error), error.error_count()
        listed += [
            {"loc": [name], "msg": "Extra inputs are not permitted", "type": "extra_forbidden"}
            for name in unknown[:MAX_LISTED_ERRORS]
        ]
        raise HttpError(422, cut_short(listed[:MAX_LISTED_ERRORS], total + len(unknown)))


class _NotJson(ValueError):
    """NaN, Infinity or -Infinity, which Python's json reads but JSON does not have."""


def _refuse_constant(name: str) -> object:
    raise _NotJson(f"{name} is not a JSON value")


class _NamesRepeated(dict):
    """A JSON object in which a name repeats: `repeated` is that name and its count."""

    repeated: tuple[str, int]


def _mark_repeated_names(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """The object, marked when a name repeats in it. JSON parsers differ on which value
    wins, so a proxy or an audit log in front of us could read another ad than the one
    we score; the body's own object is refused for it once the whole body has parsed, so
    that a body that is not JSON still gets its 400."""
    document = dict(pairs)
    if len(document) == len(pairs):
        return document
    names = [name for name, _ in pairs]
    seen: set[str] = set()
    for repeated in names:  # one pass: a body may hold tens of thousands of names
        if repeated in seen:
            break
        seen.add(repeated)
    marked = _NamesRepeated(document)
    marked.repeated = (repeated, names.count(repeated))
    return marked


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, object_pairs_hook=_mark_repeated_names)


def parse_query(request: flask.Request, model: type[Model]) -> Model:
    """422 for bad fields, and for a field given more than once: `?item_id=1&item_id=2`
    names two ads, and taking either one would answer a question nobody asked."""
    repeated = [
        _repeated(name, len(values))
        for name, values in request.args.lists()
        if len(values) > 1 and name in model.model_fields
    ]
    if repeated:
        raise HttpError(422, repeated)
    try:
        return _validate(model, request.args.to_dict(flat=True))
    except HttpError as error:
        raise HttpError(422, [_placed_in_the_query(issue) for issue in error.detail]) from None


def _placed_in_the_query(issue: dict[str, object]) -> dict[str, object]:
    """A missing query field's entry, saying that it belongs in the query: a client that
    sent `item_id` in the body (as /predict takes it) did send it, just not there."""
    if issue.get("type") != "missing" or not issue.get("loc"):
        return issue
    name = issue["loc"][0]
    return {**issue, "msg": f"Field required in the query string: ?{name}=..."}


def _repeated(name: str, times: int) -> dict[str, object]:
    return {"loc": [name], "msg": f"given {times} times; give it once", "type": "repeated"}


def parse_headers(request: flask.Request, model: type[Model]) -> Model:
    """The model's fields from the headers their aliases name (case-insensitive); 422
    for bad ones."""
    present = {}
    for name, info in model.model_fields.items():
        header = info.alias or name
        if (value := request.headers.get(header)) is not None:
            # Whitespace around a value is not part of it (RFC 9110, section 5.5);
            # gunicorn drops it and werkzeug's server does not.
            present[header] = value.strip(" \t")
    return _validate(model, present)


Query = TypeVar("Query", bound=BaseModel)
Headers = TypeVar("Headers", bound=BaseModel)


def parse_query_and_headers(
    request: flask.Request, query_model: type[Query], headers_model: type[Headers]
) -> tuple[Query, Headers]:
    """Both, or one 422 listing the bad fields of both: a client fixing the query should
    not learn of its bad header only on the next try."""
    errors: list[object] = []
    query = headers = None
    try:
        query = parse_query(request, query_model)
    except HttpError as error:
        errors += error.detail
    try:
        headers = parse_headers(request, headers_model)
    except HttpError as error:
        errors += error.detail
    if query is None or headers is None:
        raise HttpError(422, errors)
    return query, headers


def parse_path_id(request: flask.Request, model: type[Model], field: str, route: str) -> Model:
    """The id in `/{route}/42` or, deployed alone behind a URL of its own, `/42`."""
    segments = request.path.strip("/").split("/")
    if len(segments) == 2 and segments[0] == route:
        segments = segments[1:]
    # Any other path is not ours: `/{route}/1/2` must not read as task 2.
    if len(segments) != 1 or segments[0] in ("", route):
        raise HttpError(
            404,
            f"Not found: expected /{route}/{{{field}}}"
            f" (or /{{{field}}} where the function is deployed on its own)",
        )
    return _validate(model, {field: segments[0]})


def _validate(model: type[Model], document: dict[str, object]) -> Model:
    try:
        return model.model_validate(document)
    except ValidationError as error:
        raise HttpError(422, field_errors(error)) from None
