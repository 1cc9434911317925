"""The OpenAPI document of the four endpoints, generated from the pydantic models the
handlers validate with (shared/schemas.py), so the documentation cannot drift.

It is OpenAPI 3.0.3, not 3.1, because the bundled Swagger UI (4.x) renders 3.0 only;
pydantic writes JSON Schema 2020-12, so `as_openapi_30` rewrites the few keywords
3.0 spells differently (null in a union, const, numeric exclusive bounds).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from shared.http.errors import MAX_LISTED_ERRORS
from shared.http.request_limits import MAX_QUERY_BYTES
from shared.schemas import (
    AsyncPredictHeaders,
    AsyncPredictResponse,
    ErrorResponse,
    ItemIdQuery,
    ModerationResultResponse,
    PredictRequest,
    PredictResponse,
    TaskIdPath,
)

REF_TEMPLATE = "#/components/schemas/{model}"
COMPONENT_MODELS: tuple[type[BaseModel], ...] = (
    PredictRequest,
    ItemIdQuery,
    TaskIdPath,
    PredictResponse,
    AsyncPredictResponse,
    ModerationResultResponse,
    ErrorResponse,
)

_ERRORS = {
    400: (
        "The body could not be read: shorter than its Content-Length, a Content-Length that"
        " is not a number, or one sent with Transfer-Encoding"
    ),
    401: "Missing or invalid API key (only when API_KEYS is set)",
    404: "No such ad or task",
    405: "Method not allowed; the Allow header lists the right one",
    413: "Request body over MAX_BODY_BYTES",
    414: f"Query string over {MAX_QUERY_BYTES} bytes",
    415: "Content-Type is not application/json, or Content-Encoding is not identity",
    422: (
        "A field failed validation, or was given twice; detail lists each field, at most"
        f" {MAX_LISTED_ERRORS}, then one entry of type too_many_errors saying how many more"
    ),
    500: "Settings that do not validate, or a bug; the log says which",
    503: "A dependency (PostgreSQL, Kafka, the model) is unavailable; retry after Retry-After",
}
# Where a route's error means more than the shared wording says. A 422 whose detail is
# a sentence, not a list of fields, is named here.
_PREDICT_ERRORS = {
    400: _ERRORS[400] + "; or the body is not UTF-8 JSON",
    422: _ERRORS[422] + ". A body that is not a JSON object gets a sentence",
}
_SIMPLE_PREDICT_ERRORS = {
    422: _ERRORS[422] + ". A stored ad the model cannot score gets a sentence saying why",
}
_ASYNC_PREDICT_ERRORS = {
    422: _ERRORS[422] + ". An Idempotency-Key already used for another ad gets a sentence",
}
_ITEM_ID = "The ad's id in PostgreSQL"
_ERROR_HEADERS = {
    401: {"WWW-Authenticate": "Bearer"},
    415: {"Accept-Encoding": "identity, when the body was compressed"},
    405: {"Allow": "The allowed method"},
    503: {"Retry-After": "Seconds to wait before retrying"},
}


def build_openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Ad moderation",
            "version": "1.0.0",
            "description": "An ML verdict for a classified ad, synchronously or through Kafka.",
        },
        "paths": {
            "/predict": {"post": _predict()},
            "/simple_predict": {"post": _simple_predict()},
            "/async_predict": {"post": _async_predict()},
            "/moderation_result/{task_id}": {"get": _moderation_result()},
        },
        "components": {
            "schemas": component_schemas(),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
        # An empty requirement first: with no API_KEYS configured the API is open.
        "security": [{}, {"bearer": []}, {"apiKey": []}],
    }


def component_schemas() -> dict[str, Any]:
    """Every model's JSON schema, and the models it refers to, under components/schemas."""
    schemas: dict[str, Any] = {}
    for model in COMPONENT_MODELS:
        schema = model.model_json_schema(ref_template=REF_TEMPLATE)
        for name, nested in schema.pop("$defs", {}).items():
            schemas[name] = as_openapi_30(nested)
        schemas[model.__name__] = as_openapi_30(schema)
    return schemas


def as_openapi_30(schema: Any) -> Any:
    """Rewrite JSON Schema 2020-12 keywords into their OpenAPI 3.0 spelling, recursively."""
    if isinstance(schema, list):
        return [as_openapi_30(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {key: as_openapi_30(value) for key, value in schema.items()}
    for bound, inclusive in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(result.get(bound), int | float) and not isinstance(result[bound], bool):
            result[inclusive] = result.pop(bound)
            result[bound] = True
    if "const" in result:
        result["enum"] = [result.pop("const")]
    variants = result.get("anyOf")
    if isinstance(variants, list) and {"type": "null"} in variants:
        others = [variant for variant in variants if variant != {"type": "null"}]
        del result["anyOf"]
        if len(others) == 1:
            result.update(others[0])
        else:
            result["anyOf"] = others
        result["nullable"] = True
    return result


def _predict() -> dict[str, Any]:
    return {
        "operationId": "predict",
        "summary": "Verdict for an ad given in full",
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _ref(PredictRequest)}},
        },
        "responses": {
            "200": _json_response("The verdict", PredictResponse),
            **_errors(400, 401, 405, 413, 414, 415, 422, 500, 503, described=_PREDICT_ERRORS),
        },
    }


def _simple_predict() -> dict[str, Any]:
    return {
        "operationId": "simple_predict",
        "summary": "Verdict for an ad stored in PostgreSQL",
        "parameters": [_parameter(ItemIdQuery, "item_id", "query", _ITEM_ID)],
        "responses": {
            "200": _json_response("The verdict", PredictResponse),
            **_errors(
                400, 401, 404, 405, 413, 414, 422, 500, 503, described=_SIMPLE_PREDICT_ERRORS
            ),
        },
    }


def _async_predict() -> dict[str, Any]:
    accepted = _json_response("Task accepted; poll its result", AsyncPredictResponse)
    accepted["headers"] = {
        "Location": {"description": "/moderation_result/{task_id}", "schema": {"type": "string"}},
        "Idempotent-Replayed": {
            "description": "true when an earlier request with this Idempotency-Key made the task",
            "schema": {"type": "string", "enum": ["true"]},
        },
    }
    return {
        "operationId": "async_predict",
        "summary": "Queue a stored ad for moderation",
        "parameters": [
            _parameter(ItemIdQuery, "item_id", "query", _ITEM_ID),
            _parameter(
                AsyncPredictHeaders,
                "Idempotency-Key",
                "header",
                "Optional. A request retried with the same key gets the first one's task"
                " back instead of a second task; the same key for another ad is a 422."
                " A key names its task for IDEMPOTENCY_KEY_TTL_S (a day by default), then"
                " makes a new one. With API keys, a key is the API key's own: another"
                " client's same key is another key. A UUID per request is a good key",
            ),
        ],
        "responses": {
            "202": accepted,
            **_errors(400, 401, 404, 405, 413, 414, 422, 500, 503, described=_ASYNC_PREDICT_ERRORS),
        },
    }


def _moderation_result() -> dict[str, Any]:
    return {
        "operationId": "moderation_result",
        "summary": "A task's status and, once finished, its verdict",
        "description": "HEAD answers with the same status and headers, and no body.",
        "parameters": [_parameter(TaskIdPath, "task_id", "path", "The id async_predict returned")],
        "responses": {
            "200": _json_response("The task", ModerationResultResponse),
            **_errors(400, 401, 404, 405, 413, 414, 422, 500, 503),
        },
    }


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF_TEMPLATE.format(model=model.__name__)}


def _json_response(description: str, model: type[BaseModel]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


def _errors(*statuses: int, described: dict[int, str] | None = None) -> dict[str, Any]:
    """The error responses of `statuses`, in the shared wording unless `described` has
    the route's own."""
    descriptions = {**_ERRORS, **(described or {})}
    responses = {}
    for status in statuses:
        response = _json_response(descriptions[status], ErrorResponse)
        if status in _ERROR_HEADERS:
            response["headers"] = {
                name: {"description": description, "schema": {"type": "string"}}
                for name, description in _ERROR_HEADERS[status].items()
            }
        responses[str(status)] = response
    return responses


def _parameter(
    model: type[BaseModel], field: str, location: str, description: str
) -> dict[str, Any]:
    """A query or path parameter whose schema is the model's own for that field."""
    schema = model.model_json_schema(ref_template=REF_TEMPLATE)
    return {
        "name": field,
        "in": location,
        "required": field in schema.get("required", []),
        "description": f"{description} (validated by {model.__name__})",
        "schema": as_openapi_30(schema["properties"][field]),
    }
