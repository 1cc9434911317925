"""librdkafka's log lines go through Python's logging, each repeat within a minute dropped."""

from __future__ import annotations

import logging

from shared.kafka.client_logs import same_failure
from shared.logging_setup import RepeatsDropped
from tests.python_snippets import run_python


def _record(message: str) -> logging.LogRecord:
    return logging.LogRecord("librdkafka", logging.ERROR, "", 0, message, None, None)


def test_a_line_repeated_within_the_window_is_let_through_once_then_says_how_many_were_dropped():
    now = [0.0]
    repeats = RepeatsDropped(window_s=60, clock=lambda: now[0])

    first = [repeats.filter(_record("refused")) for _ in range(3)]
    now[0] = 10.0
    first.append(repeats.filter(_record("refused")))
    other = repeats.filter(_record("another line"))
    now[0] = 70.0
    later = _record("refused")
    let_through = repeats.filter(later)

    assert first == [True, False, False, False] and other
    assert let_through and later.repeats_dropped == 3
    assert later.repeats_last_seconds_ago == 60  # the last copy dropped, at 10 s


# A consumer of ours, polled for a few seconds against a closed port: librdkafka would
# write ~20 identical lines a second to stderr by itself.
_CONSUMER_ON_A_CLOSED_PORT = """
import logging, time
from confluent_kafka import Consumer
from shared.kafka.config import consumer_config
from shared.settings import read_settings
logging.basicConfig(level=logging.INFO, format="LOGGED %(name)s %(message)s")
consumer = Consumer(consumer_config(read_settings(kafka_bootstrap_servers="127.0.0.1:1")))
consumer.subscribe(["moderation"])
deadline = time.monotonic() + 3
while time.monotonic() < deadline:
    consumer.poll(0.2)
consumer.close()
"""


def test_a_consumer_whose_broker_is_down_logs_the_refusal_once_through_python_logging():
    result = run_python(_CONSUMER_ON_A_CLOSED_PORT)

    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    refusals = [line for line in lines if "Connection refused" in line]
    assert len(refusals) == 1, lines
    assert refusals[0].startswith("LOGGED librdkafka ")


def test_failed_connects_that_took_longer_or_shorter_are_one_line():
    repeats = RepeatsDropped(window_s=60, clock=lambda: 0.0, same_line=same_failure)
    line = "127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused"

    let_through = [
        repeats.filter(_record(f"{line} (after {ms}ms in state CONNECT)")) for ms in (0, 1, 12)
    ]

    assert let_through == [True, False, False]
