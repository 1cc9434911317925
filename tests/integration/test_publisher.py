"""Publishing to the real broker: what an outbox may mark when Kafka takes only part."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka.admin import AdminClient, NewPartitions

from shared.errors import PartlyAcknowledged
from shared.kafka.config import MAX_RECORD_BYTES, METADATA_REFRESH_MS, producer_config
from shared.kafka.publisher import KafkaPublisher
from shared.kafka.record import OutgoingRecord
from shared.moderation.outbox import publish_for_outbox
from shared.ops.health import check_readiness
from tests.integration.kafka_records import read_topic
from tests.integration.wiring import wired_services
from tests.waiting import wait_until


def test_a_record_the_producer_refuses_is_the_only_one_not_acknowledged(settings):
    topic = settings.kafka_dlq_topic
    records = [
        OutgoingRecord(topic, b"1", b"first"),
        OutgoingRecord(topic, b"2", b"x" * (MAX_RECORD_BYTES + 1)),  # over message.max.bytes
        OutgoingRecord(topic, b"3", b"third"),
    ]
    publisher = KafkaPublisher(
        producer_config(settings),
        timeout_s=settings.kafka_publish_timeout_s,
        queue_full_wait_s=settings.queue_full_wait_s,
    )
    try:
        with pytest.raises(PartlyAcknowledged, match="rejected 1 of 3") as partly:
            publisher.publish(records)
        taken = publish_for_outbox(publisher, records, ["a", "b", "c"])
    finally:
        publisher.close()

    assert partly.value.acknowledged == [True, False, True]
    assert taken == ["a", "c"]
    values = sorted(message.value() for message in read_topic(settings, topic, expected=4))
    assert values == [b"first", b"first", b"third", b"third"]


def test_a_running_publisher_writes_to_partitions_added_to_the_topic_within_seconds(settings):
    # Scaling out: the topic grows from 3 partitions to 6 while async_predict runs.
    topic = settings.kafka_moderation_topic
    publisher = KafkaPublisher(
        producer_config(settings),
        timeout_s=settings.kafka_publish_timeout_s,
        queue_full_wait_s=settings.queue_full_wait_s,
    )
    keys = [str(item_id).encode() for item_id in range(1, 61)]  # keyed by item_id, as ours
    try:
        publisher.publish([OutgoingRecord(topic, key, b"before") for key in keys])
        admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
        (growing,) = admin.create_partitions([NewPartitions(topic, 6)]).values()
        growing.result(timeout=15)

        def partitions_written_since_the_growth() -> set[int]:
            publisher.publish([OutgoingRecord(topic, key, b"after") for key in keys])
            messages = read_topic(settings, topic, expected=10_000, timeout_s=1)
            return {m.partition() for m in messages if m.value() == b"after"}

        # With librdkafka's default refresh this would take up to 5 minutes.
        wait_until(
            lambda: partitions_written_since_the_growth() >= {3, 4, 5},
            timeout_s=METADATA_REFRESH_MS / 1000 + 20,
            poll_interval_s=1.0,
            what="records keyed to the 3 new partitions",
        )
    finally:
        publisher.close()


def test_readiness_names_a_topic_the_cluster_does_not_have(settings, caplog):
    # A publish to it would only time out, as if the broker were down; the test broker
    # creates no topic on its own.
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    without_dlq = settings.model_copy(update={"kafka_dlq_topic": missing})
    with wired_services(without_dlq) as services:
        checks = check_readiness(services, names=["kafka"])
    with wired_services(settings) as services:
        checks_with_both = check_readiness(services, names=["kafka"])

    assert checks["kafka"].ok is False
    assert any(f"has no topic {missing!r}" in r.getMessage() for r in caplog.records)
    assert checks_with_both["kafka"].ok is True
