"""Publishing to the real broker: what an outbox may mark when Kafka takes only part."""

from __future__ import annotations

import pytest

from shared.errors import PartlyAcknowledged
from shared.kafka.config import MAX_RECORD_BYTES, producer_config
from shared.kafka.publisher import KafkaPublisher
from shared.kafka.record import OutgoingRecord
from shared.moderation.outbox import publish_for_outbox
from tests.integration.helpers import read_topic


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
