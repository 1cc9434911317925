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
import re
from functools import lru_cache

from shared.logging_setup import drop_repeats

LOGGER_NAME = "librdkafka"
# A failed connect says how long it took ("after 0ms in state CONNECT"): one more
# millisecond under load must not make it another line.
_ELAPSED = re.compile(r"\(after \d+ms in state")


def same_failure(line: str) -> str:
    return _ELAPSED.sub("(after …ms in state", line)


@lru_cache(maxsize=1)
def client_logger() -> logging.Logger:
    """The logger every client of ours hands librdkafka (its `logger` setting)."""
    return drop_repeats(LOGGER_NAME, same_line=same_failure)
