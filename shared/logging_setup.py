"""Logging for the runner and the entry points: JSON lines for machines, plain lines for people.

A log call's `extra` fields (`task_id`, `item_id`, `partition`, `error`, ...) are
kept: as keys of the JSON object, or as `key=value` after a terminal line's message.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any

# The attributes every LogRecord has; anything else on a record came from `extra`.
_STANDARD_ATTRIBUTES = frozenset(
    set(vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None))) | {"message", "asctime"}
)
# Listed first, in this order, because they are what an operator searches by.
_LEADING_EXTRAS = ("task_id", "item_id")


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a log call passed with `extra`, task_id and item_id first."""
    extras = {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRIBUTES}
    leading = {key: extras.pop(key) for key in _LEADING_EXTRAS if key in extras}
    return {**leading, **extras}


class JsonLinesFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, the extras, and any traceback."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **extra_fields(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class ReadableFormatter(logging.Formatter):
    """`12:00:01 INFO  shared.x: message task_id=7 item_id=1` for a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-5s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = " ".join(f"{key}={value}" for key, value in extra_fields(record).items())
        if not extras:
            return line
        # The traceback, if any, stays below the first line; the extras go on it.
        first, newline, rest = line.partition("\n")
        return f"{first} {extras}{newline}{rest}"


def configure_logging(
    level: str = "INFO", *, stream: IO[str] | None = None, json_lines: bool | None = None
) -> logging.Handler:
    """Send the root logger to `stream` (stderr); JSON unless it is a terminal."""
    stream = stream or sys.stderr
    if json_lines is None:
        json_lines = not _is_terminal(stream)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLinesFormatter() if json_lines else ReadableFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Werkzeug logs every request at INFO; that is noise unless debugging.
    if logging.getLevelName(level.upper()) > logging.DEBUG:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    return handler


def configure_logging_unless_done(level: str) -> None:
    """`configure_logging`, unless the root logger has a handler already (the runner's,
    a test's, or whatever a host process set up), which stays as it is."""
    if not logging.getLogger().handlers:
        configure_logging(level)


def _is_terminal(stream: IO[str]) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())
