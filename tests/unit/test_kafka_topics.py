"""The topics as `ensure_topics` asks the broker for them."""

from __future__ import annotations

from concurrent.futures import Future
from types import SimpleNamespace

import pytest
from confluent_kafka import KafkaError, KafkaException

from shared.kafka.config import MAX_RECORD_BYTES, MAX_TASK_RECORD_BYTES
from shared.kafka.topics import (
    TopicSetupError,
    _configs_of,
    describe,
    ensure_topics,
    new_topics,
)
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
    # Dead letters are kept a month for someone to read; tasks as the brokers keep records.
    assert dlq.config["retention.ms"] == str(30 * 24 * 3600 * 1000)
    assert "retention.ms" not in moderation.config


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


class _Entry:
    def __init__(self, value: str) -> None:
        self.value = value


class _AdminOfExistingTopics:
    """A cluster where both topics exist, and an account that may describe them but not
    create topics (they were made with Terraform, say): CreateTopics is refused even for
    a topic that exists."""

    def __init__(self, settings: Settings, configs: dict[str, str], replicas: int = 1) -> None:
        self._names = [settings.kafka_moderation_topic, settings.kafka_dlq_topic]
        self._configs = configs
        self._replicas = replicas
        self.create_requests: list[list[str]] = []

    def list_topics(self, timeout):
        partition = SimpleNamespace(leader=1, replicas=list(range(self._replicas)))
        topics = {
            name: SimpleNamespace(partitions={0: partition}, error=None) for name in self._names
        }
        return SimpleNamespace(topics=topics)

    def describe_configs(self, resources, request_timeout):
        described = {}
        for resource in resources:
            future: Future = Future()
            future.set_result({key: _Entry(value) for key, value in self._configs.items()})
            described[resource] = future
        return described

    def create_topics(self, topics, request_timeout, operation_timeout):
        self.create_requests.append([topic.topic for topic in topics])
        refused = {}
        for topic in topics:
            future: Future[None] = Future()
            future.set_exception(KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)))
            refused[topic.topic] = future
        return refused


def test_topics_that_exist_are_not_asked_for_again_so_an_account_without_create_passes():
    settings = Settings()
    admin = _AdminOfExistingTopics(settings, {})

    partitions = ensure_topics(settings, timeout_s=1.0, admin=admin)

    assert admin.create_requests == []
    assert partitions == {"moderation": 1, "moderation_dlq": 1}


def test_an_unreachable_broker_is_a_topic_setup_error_after_librdkafka_says_why(caplog):
    # Nothing listens on port 1: librdkafka's reason is in its log lines, and the error
    # alone said no more than "Broker transport failure".
    settings = Settings(kafka_bootstrap_servers="127.0.0.1:1")

    with pytest.raises(TopicSetupError, match=r"could not read the topics of 127\.0\.0\.1:1"):
        ensure_topics(settings, timeout_s=1.0)

    said = [record.getMessage() for record in caplog.records if record.name == "librdkafka"]
    assert any("Connection refused" in line for line in said), said


@pytest.mark.parametrize(
    ("replication", "configs", "replicas", "warned"),
    [
        (1, {"retention.bytes": "4096"}, 1, "keeps at most 4096 bytes a partition"),
        (3, {"min.insync.replicas": "2"}, 1, "has 1 replica(s) of a partition, fewer than"),
        (3, {"min.insync.replicas": "1"}, 3, "min.insync.replicas=1: an acknowledged record"),
    ],
)
def test_an_existing_topic_that_may_lose_acknowledged_tasks_is_warned_of(
    caplog, replication, configs, replicas, warned
):
    settings = Settings(kafka_replication_factor=replication)
    admin = _AdminOfExistingTopics(settings, configs, replicas)

    ensure_topics(settings, timeout_s=1.0, admin=admin)

    assert warned in caplog.text


def test_an_existing_topic_as_the_settings_ask_for_it_gets_no_warning(caplog):
    settings = Settings(kafka_replication_factor=3)
    admin = _AdminOfExistingTopics(settings, {"min.insync.replicas": "2"}, replicas=3)

    ensure_topics(settings, timeout_s=1.0, admin=admin)

    assert caplog.records == []


def test_the_report_says_how_to_grow_a_topic_with_fewer_partitions_and_only_that_one():
    # Kafka adds partitions but never removes them: a topic with more than asked for
    # gets no advice to run kafka-topics.sh --alter.
    settings = Settings(kafka_moderation_partitions=6, kafka_dlq_partitions=2)

    report = describe(settings, {"moderation": 3, "moderation_dlq": 4})

    assert report == (
        "moderation (3 partitions; KAFKA_MODERATION_PARTITIONS asks for 6, which only a new"
        " topic gets (grow this one with kafka-topics.sh --alter --partitions)),"
        " moderation_dlq (4 partitions; KAFKA_DLQ_PARTITIONS asks for 2, which only a new"
        " topic gets)"
    )


class _AdminRacedByAnotherJob(_AdminOfExistingTopics):
    """Lists no topic, then finds each made by another job by the time it asks for it."""

    def list_topics(self, timeout):
        if not self.create_requests:
            return SimpleNamespace(topics={})
        return super().list_topics(timeout)

    def create_topics(self, topics, request_timeout, operation_timeout):
        self.create_requests.append([topic.topic for topic in topics])
        made = {}
        for topic in topics:
            future: Future[None] = Future()
            future.set_exception(KafkaException(KafkaError(KafkaError.TOPIC_ALREADY_EXISTS)))
            made[topic.topic] = future
        return made


def test_a_topic_another_job_created_in_between_is_taken_as_it_is():
    # Two deployments' setup jobs started together: the second one's CreateTopics finds
    # the topics made, which is what it wanted, not a failure.
    settings = Settings()
    admin = _AdminRacedByAnotherJob(settings, {})

    partitions = ensure_topics(settings, timeout_s=1.0, admin=admin)

    assert admin.create_requests == [["moderation", "moderation_dlq"]]
    assert partitions == {"moderation": 1, "moderation_dlq": 1}
