"""Helpers for tests against real Kafka and PostgreSQL: wiring, a background consumer, waits."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from shared.bootstrap import Services, build_services, install_services
from shared.kafka.config import consumer_config
from shared.kafka.poll_loop import PartitionedPollLoop
from shared.kafka.record import ConsumedRecord
from shared.moderation.batch import process_moderation_batch
from shared.settings import Settings


@contextmanager
def wired_services(settings: Settings, **replacements: object) -> Iterator[Services]:
    """Real adapters for `settings`, installed for the handlers, closed afterwards."""
    services = build_services(settings)
    for name, value in replacements.items():
        setattr(services, name, value)
    install_services(services)
    try:
        yield services
    finally:
        install_services(None)
        services.close()


def new_poll_loop(
    services: Services,
    handle_batch: Callable[[list[ConsumedRecord]], object] | None = None,
    **loop_options: object,
) -> PartitionedPollLoop:
    """The consumer's poll loop on the services' settings, on a new client; by default
    handing batches to the moderation handler."""
    settings = services.settings
    return PartitionedPollLoop(
        Consumer(consumer_config(settings)),
        settings.kafka_moderation_topic,
        handle_batch or (lambda records: process_moderation_batch(services, records)),
        batch_size=settings.consumer_batch_size,
        poll_timeout_s=settings.consumer_poll_timeout_s,
        max_workers=settings.db_pool_max_size,
        **loop_options,  # type: ignore[arg-type]
    )


@contextmanager
def running_consumer(
    services: Services,
    handle_batch: Callable[[list[ConsumedRecord]], object] | None = None,
    **loop_options: object,
) -> Iterator[PartitionedPollLoop]:
    """The poll loop in a background thread, stopped (bounded) when the block ends."""
    loop = new_poll_loop(services, handle_batch, **loop_options)
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        stop.set()
        thread.join(timeout=30)
        if thread.is_alive():
            pytest.fail("poll loop did not stop within 30 s")


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


def seed_ads(services: Services, count: int, *, name: str = "Mountain bike") -> list[int]:
    """Insert one seller and `count` ads; returns their ids."""
    with services.db.transaction() as tx:
        seller_id = tx.conn.execute(
            "INSERT INTO sellers (is_verified) VALUES (true) RETURNING id"
        ).fetchone()[0]
        rows = tx.conn.execute(
            """
            INSERT INTO ads (seller_id, name, description, category, images_qty)
            SELECT %s, %s || ' ' || n, 'Aluminium frame, 21 gears, barely used.', 3, 4
            FROM generate_series(1, %s) AS n
            RETURNING id
            """,
            (seller_id, name, count),
        ).fetchall()
    return [row[0] for row in rows]


def task_rows(services: Services) -> list[tuple]:
    with services.db.transaction() as tx:
        return tx.conn.execute(
            "SELECT id, item_id, status, attempts, error_message, probability"
            " FROM moderation_results ORDER BY id"
        ).fetchall()
