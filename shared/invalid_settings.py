"""How settings that do not validate are told: `InvalidSettings`, whose message names
each problem and never quotes a secret."""

from __future__ import annotations

from pydantic import ValidationError
from pydantic_core import ErrorDetails

# Settings never quoted in an error: an API key, a password in the connection string.
_SECRET_SETTINGS = {"api_keys", "database_url", "kafka_sasl_password", "kafka_ssl_key_password"}


class InvalidSettings(ValueError):
    """Settings that do not validate, named with what is wrong; never quoting API_KEYS
    or DATABASE_URL."""


def describe_invalid(error: ValidationError) -> str:
    """Each problem as `NAME: what is wrong, got VALUE`, never quoting API_KEYS or
    DATABASE_URL (its password), which would then be logged on every request of a
    misconfigured function. (Our own messages name only values that are no secret: a
    log level, a pool size.)"""
    return "; ".join(map(_describe_issue, error.errors(include_url=False)))


def _describe_issue(issue: ErrorDetails) -> str:
    name = ".".join(map(str, issue["loc"]))
    # Our own validators' messages (`value_error`) say what they found themselves, and a
    # check across fields names its settings: pydantic's "Value error, " adds nothing.
    quoted_already = issue["type"] == "value_error"
    message = issue["msg"].removeprefix("Value error, ") if quoted_already else issue["msg"]
    if not name and quoted_already:
        return message
    described = f"{name.upper() or 'settings'}: {message}"
    # A field's own value, unless it may hold a secret; a check across fields (no name)
    # has them all as its input.
    if name and name not in _SECRET_SETTINGS and "input" in issue and not quoted_already:
        shown = repr(issue["input"])
        described += f", got {shown if len(shown) <= 80 else shown[:77] + '...'}"
    return described
