"""What the HTTP functions share: the endpoint wrapper, body and query parsing, errors."""

from shared.http.auth import caller_scope
from shared.http.endpoint import JsonResult, json_endpoint
from shared.http.errors import register_json_errors
from shared.http.parsing import (
    parse_headers,
    parse_json_body,
    parse_path_id,
    parse_query,
    parse_query_and_headers,
)

__all__ = [
    "JsonResult",
    "caller_scope",
    "json_endpoint",
    "parse_headers",
    "parse_json_body",
    "parse_path_id",
    "parse_query",
    "parse_query_and_headers",
    "register_json_errors",
]
