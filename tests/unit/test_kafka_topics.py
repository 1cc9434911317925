"""The topics as `ensure_topics` asks the broker for them."""

from __future__ import annotations

from concurrent.futures import Future

import pytest
from confluent_kafka import KafkaError, KafkaException

from shared.kafka.config import MAX_RECORD_BYTES, MAX_TASK_RECORD_BYTES
from shared.kafka.topics import _configs_of, new_topics
from shared.settings import Settings


@pytest.mark.parametrize(("replicas", "in_sync"), [(1, "1"), (2, "1"), (3, "2"), (5, "2")])
def test_an_acknowledged_record_is_on_two_replicas_once_one_may_be_down(replicas, in_sync):
    settings = Settings(kafka_replication_factor=replicas)

    topics = new_topics(settings)

    assert [topic.replication_factor for topic in topics] == [replicas, replicas]
    assert [topic.config["min.insync.replicas"] for topic in topics] == [in_sync, in_sync]


def test_each_topic_gets_its_name_partitions_and_record_limit():
    settings = Settings(kafka_moderation_partitions=6, kafka_dlq_partitions=2)

    moderation, dlq = new_topics(settings)

    assert (moderation.topic, moderation.num_partitions) == ("moderation", 6)
    assert (dlq.topic, dlq.num_partitions) == ("moderation_dlq", 2)
    # The DLQ must take any record `moderation` let in, plus our headers.
    assert moderation.config["max.message.bytes"] == str(MAX_TASK_RECORD_BYTES)
    assert dlq.config["max.message.bytes"] == str(MAX_RECORD_BYTES)
    assert MAX_RECORD_BYTES > MAX_TASK_RECORD_BYTES


class _AdminWithoutDescribeConfigs:
    """An account whose ACLs allow creating topics but not reading their settings."""

    def describe_configs(self, resources, request_timeout):
        refused = {}
        for resource in resources:
            future: Future[None] = Future()
            future.set_exception(KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)))
            refused[resource] = future
        return refused


def test_topic_settings_an_account_may_not_read_are_left_unchecked_with_a_warning(caplog):
    configs = _configs_of(_AdminWithoutDescribeConfigs(), ["moderation"], "kafka:9092", 1.0)

    assert configs is None
    (warning,) = caplog.records
    assert warning.levelname == "WARNING"
    assert "topic 'moderation''s settings not checked" in warning.getMessage()
