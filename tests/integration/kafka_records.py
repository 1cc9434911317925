"""Records put on, counted on and read back from the test broker's topics, without the
service's own clients."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from shared.settings import Settings


def produce_raw(
    settings: Settings, records: list[tuple[bytes | None, bytes | None]], topic: str | None = None
) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers})
    for key, value in records:
        producer.produce(topic or settings.kafka_moderation_topic, key=key, value=value)
    remaining = producer.flush(15)
    if remaining:
        pytest.fail(f"{remaining} record(s) not delivered to Kafka within 15 s")


def records_on(settings: Settings, topic: str) -> int:
    """How many records `topic` holds, by its partitions' watermarks: unlike reading it,
    this does not depend on a consumer group joining in time."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": f"counter-{uuid.uuid4().hex[:8]}",
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        total = 0
        for partition in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), 10)
            total += high - low
        return total
    finally:
        consumer.close()


def read_topic(settings: Settings, topic: str, *, expected: int, timeout_s: float = 20):
    """Every record on `topic` once `expected` arrived (or all there were at the deadline)."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    messages = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and len(messages) < expected:
            for message in consumer.consume(100, 0.2):
                if message.error() is None:
                    messages.append(message)
        # A little longer, so an unexpected extra record is seen too.
        settle = time.monotonic() + 1.0
        while time.monotonic() < settle:
            messages.extend(m for m in consumer.consume(100, 0.2) if m.error() is None)
    finally:
        consumer.close()
    return messages
