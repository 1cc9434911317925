"""An in-memory Kafka for the local runner's default: librdkafka's built-in mock cluster.

One "anchor" client is created with `test.mock.num.brokers`; librdkafka then runs a
mock cluster inside this process, listening on a 127.0.0.1 port, and logs the
address it replaced bootstrap.servers with. Every other client (producer,
consumer, admin) connects to that address like to a real broker, so consumer
groups, offset commits and idempotent produce all work.

What differs from a real broker, found by trying it:
- There is no CreateTopics: a topic is created, with 4 partitions, by the first
  metadata request that names it (`create_topics` below does that).
- A new consumer group waits 3 s before its first assignment.
- Everything is lost when the process exits. It is for development only.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable

from confluent_kafka import KafkaException, Producer

START_TIMEOUT_S = 5.0
MOCK_PARTITIONS = 4
_ADDRESS = re.compile(r"Mock cluster enabled: .* replaced with (\S+)")


class _AddressCatcher(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.address: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        match = _ADDRESS.search(record.getMessage())
        if match:
            self.address = match[1]


class MockKafkaCluster:
    """The mock cluster lives as long as this object's anchor client."""

    def __init__(self) -> None:
        self._anchor: Producer | None = None
        self.bootstrap_servers: str | None = None

    def start(self, timeout_s: float = START_TIMEOUT_S) -> str:
        """Start the cluster and return its bootstrap address."""
        catcher = _AddressCatcher()
        anchor_log = logging.getLogger(f"{__name__}.anchor")
        anchor_log.addHandler(catcher)
        anchor_log.propagate = False
        anchor_log.setLevel(logging.DEBUG)
        self._anchor = Producer({"test.mock.num.brokers": 1, "logger": anchor_log})
        deadline = time.monotonic() + timeout_s
        # The log line is delivered by poll(), on this thread.
        while catcher.address is None:
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError(
                    f"librdkafka's mock cluster did not report its address within {timeout_s:g} s"
                )
            self._anchor.poll(0.05)
        anchor_log.removeHandler(catcher)
        self.bootstrap_servers = catcher.address
        return catcher.address

    def create_topics(self, topics: Iterable[str], timeout_s: float = START_TIMEOUT_S) -> None:
        """Create each topic (with MOCK_PARTITIONS partitions) by asking for its metadata."""
        if self.bootstrap_servers is None:
            raise RuntimeError("the mock cluster is not started: call start() first")
        # A producer's metadata request may auto-create topics (allow.auto.create.topics).
        client = Producer({"bootstrap.servers": self.bootstrap_servers})
        try:
            for topic in topics:
                metadata = client.list_topics(topic, timeout=timeout_s).topics[topic]
                if metadata.error is not None or not metadata.partitions:
                    raise RuntimeError(f"mock cluster did not create {topic!r}: {metadata.error}")
        except KafkaException as error:
            raise RuntimeError(f"mock cluster did not answer: {error}") from error
        finally:
            client.flush(1.0)

    def close(self) -> None:
        """Destroy the cluster; close every client of it first, or they log disconnects."""
        self._anchor = None
        self.bootstrap_servers = None
