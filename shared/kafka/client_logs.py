"""librdkafka's own log lines, through Python's logging: in the service's log format, and
each repeat of a line within a minute dropped.

Left to itself, librdkafka writes to stderr, outside the JSON lines, and a consumer whose
broker was down wrote `Connect to ... failed: Connection refused` about 20 times a second:
its group coordinator asks for a connection every ~50 ms, past the reconnect back-off.
The lines reach the logger when the client is polled (the poll loop, the producer's
delivery-report thread), on the polling thread.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from functools import lru_cache

LOGGER_NAME = "librdkafka"
REPEAT_WINDOW_S = 60.0
# Distinct lines remembered at most: they name brokers and partitions, a bounded set, but
# nothing here may grow for as long as a process lives.
MAX_REMEMBERED_LINES = 1_000


class RepeatsDropped(logging.Filter):
    """Lets a line through once per `window_s`; the next one it lets through says, as
    `repeats_dropped`, how many of it were dropped in between."""

    def __init__(
        self, window_s: float = REPEAT_WINDOW_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()  # clients are polled on several threads
        self._seen: dict[str, tuple[float, int]] = {}  # line -> (when let through, dropped)

    def filter(self, record: logging.LogRecord) -> bool:
        line = record.getMessage()
        now = self._clock()
        with self._lock:
            let_through_at, dropped = self._seen.get(line, (-math.inf, 0))
            if now - let_through_at < self._window_s:
                self._seen[line] = (let_through_at, dropped + 1)
                return False
            if len(self._seen) >= MAX_REMEMBERED_LINES:
                self._forget_lines_before(now - self._window_s)
            self._seen[line] = (now, 0)
        if dropped:
            record.repeats_dropped = dropped
        return True

    def _forget_lines_before(self, cutoff: float) -> None:
        self._seen = {line: seen for line, seen in self._seen.items() if seen[0] >= cutoff}
        if len(self._seen) >= MAX_REMEMBERED_LINES:
            self._seen.clear()  # all within the window: a few repeats more beat no bound


@lru_cache(maxsize=1)
def client_logger() -> logging.Logger:
    """The logger every client of ours hands librdkafka (its `logger` setting)."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.addFilter(RepeatsDropped())
    return logger
