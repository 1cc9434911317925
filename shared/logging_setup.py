"""Logging for the runner and the entry points: JSON lines for machines, plain lines for people.

A log call's `extra` fields (`task_id`, `item_id`, `partition`, `error`, ...) are
kept: as keys of the JSON object, or as `key=value` after a terminal line's message.
A library that repeats one line through an outage can have its repeats dropped
(`drop_repeats`).
"""

from __future__ import annotations

import json
import logging
import math
import sys
import threading
import time
from collections.abc import Callable
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


_LINE_BREAKS_JSON_LEAVES = {0x85: "\\u0085", 0x2028: "\\u2028", 0x2029: "\\u2029"}


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
        line = json.dumps(entry, default=str, ensure_ascii=False)
        # JSON lets these three stand unescaped, but Python's splitlines() and some log
        # shippers end a line at each: a request path holding one would cut its line in two.
        return line.translate(_LINE_BREAKS_JSON_LEAVES)


class ReadableFormatter(logging.Formatter):
    """`12:00:01 INFO  shared.x: message task_id=7 item_id=1` for a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-5s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = " ".join(
            f"{key}={_readable(value)}" for key, value in extra_fields(record).items()
        )
        if not extras:
            return line
        # The traceback, if any, stays below the first line; the extras go on it.
        first, newline, rest = line.partition("\n")
        return f"{first} {extras}{newline}{rest}"


def _readable(value: object) -> str:
    """The value as it reads, unless it holds a newline or another control character: a
    caller's path decoded from `%0a` would otherwise start a line of its own that looks
    like ours, or an escape would reach the terminal. Those are shown as repr() shows
    them. (JSON lines escape them already.)"""
    text = str(value)
    return text if text.isprintable() else repr(text)


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
    a test's, or whatever a host process set up), which stays as it is; but for
    functions-framework's own (below)."""
    root = logging.getLogger()
    if not root.handlers:
        configure_logging(level)
        return
    # With LOG_EXECUTION_ID set, functions-framework installs a root handler of its own
    # at WARNING, with no formatter: our INFO lines and every extra field (task_id,
    # item_id) would be lost. Its stream adds the execution id to a JSON line it is
    # given, so the handler stays, with our JSON lines and LOG_LEVEL.
    # It also configures logging with dictConfig's default, which disables every logger
    # made before it: every module's of ours the function's source imported.
    execution_id_handlers = [h for h in root.handlers if _writes_execution_ids(h)]
    if not execution_id_handlers:
        return
    for handler in execution_id_handlers:
        handler.setFormatter(JsonLinesFormatter())
    root.setLevel(level.upper())
    for logger in list(logging.Logger.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger):
            logger.disabled = False


def _writes_execution_ids(handler: logging.Handler) -> bool:
    try:  # imported here: a host process without functions-framework has no such handler
        from functions_framework.execution_id import logging_stream
    except ImportError:
        return False
    return getattr(handler, "stream", None) is logging_stream


def _is_terminal(stream: IO[str]) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


# Repeats of one line dropped for this long: outages make libraries log the same failure
# again and again (librdkafka's connects, psycopg_pool's reconnects).
REPEAT_WINDOW_S = 60.0
# Distinct lines remembered at most: they name brokers, partitions and pools, a bounded
# set, but nothing here may grow for as long as a process lives.
MAX_REMEMBERED_LINES = 1_000


class RepeatsDropped(logging.Filter):
    """Lets a line through once per `window_s`; the next one it lets through says, as
    `repeats_dropped`, how many of it were dropped in between, and as
    `repeats_last_seconds_ago` how long ago the last of those was (the copy let through
    may open a new outage, a day after the last)."""

    def __init__(
        self,
        window_s: float = REPEAT_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
        same_line: Callable[[str], str] = str,
    ) -> None:
        super().__init__()
        self._window_s = window_s
        self._clock = clock
        self._same_line = same_line  # what a line is known by: the part its repeats share
        self._lock = threading.Lock()  # a library logs from threads of its own
        # line -> (when let through, copies dropped since, when the last was dropped)
        self._seen: dict[str, tuple[float, int, float]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        line = self._same_line(record.getMessage())
        now = self._clock()
        with self._lock:
            let_through_at, dropped, dropped_at = self._seen.get(line, (-math.inf, 0, 0.0))
            if now - let_through_at < self._window_s:
                self._seen[line] = (let_through_at, dropped + 1, now)
                return False
            if len(self._seen) >= MAX_REMEMBERED_LINES:
                self._forget_lines_before(now - self._window_s)
            self._seen[line] = (now, 0, 0.0)
        if dropped:
            record.repeats_dropped = dropped
            record.repeats_last_seconds_ago = round(now - dropped_at)
        return True

    def forget_all(self) -> None:
        """Let the next copy of every line through, as if none had been seen."""
        with self._lock:
            self._seen.clear()

    def _forget_lines_before(self, cutoff: float) -> None:
        self._seen = {line: seen for line, seen in self._seen.items() if seen[0] >= cutoff}
        if len(self._seen) >= MAX_REMEMBERED_LINES:
            self._seen.clear()  # all within the window: a few repeats more beat no bound


def drop_repeats(logger_name: str, same_line: Callable[[str], str] = str) -> logging.Logger:
    """The logger, with a line repeated within REPEAT_WINDOW_S logged once (idempotent);
    `same_line` gives what a line's repeats have in common."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, RepeatsDropped) for f in logger.filters):
        logger.addFilter(RepeatsDropped(same_line=same_line))
    return logger
