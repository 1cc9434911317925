"""The publisher's ping: a cluster that answers must also have the topics it writes to."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from confluent_kafka import KafkaError, KafkaException

from shared.errors import BrokerUnavailable
from shared.kafka.publisher import KafkaPublisher

TOPICS = ("moderation", "moderation_dlq")


class _Cluster:
    """Lists `listed`; asked for a topic by name, answers with its `by_name` error."""

    def __init__(self, listed: set[str], by_name: dict[str, int | None]) -> None:
        self.listed, self.by_name = listed, by_name

    def __call__(self, config: dict) -> _Cluster:  # stands in for Producer(config)
        return self

    def list_topics(self, topic: str | None = None, timeout: float = -1):
        if topic is None:
            return SimpleNamespace(
                topics={name: SimpleNamespace(error=None) for name in self.listed}
            )
        code = self.by_name[topic]
        error = None if code is None else KafkaError(code)
        return SimpleNamespace(topics={topic: SimpleNamespace(error=error)})

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        return 0


def _pinged(cluster: _Cluster) -> None:
    publisher = KafkaPublisher(
        {"bootstrap.servers": "kafka:9092"},
        timeout_s=1.0,
        queue_full_wait_s=0.5,
        make_producer=cluster,
        topics=TOPICS,
    )
    try:
        publisher.ping(timeout_s=1.0)
    finally:
        publisher.close()


def test_a_topic_the_cluster_does_not_have_is_named():
    cluster = _Cluster({"moderation"}, {"moderation_dlq": KafkaError.UNKNOWN_TOPIC_OR_PART})

    with pytest.raises(BrokerUnavailable, match="has no topic 'moderation_dlq'"):
        _pinged(cluster)


def test_a_topic_left_out_of_the_listing_by_the_accounts_acls_is_not_taken_for_missing():
    # Least privilege: async_predict's account may not describe the DLQ at all.
    cluster = _Cluster({"moderation"}, {"moderation_dlq": KafkaError.TOPIC_AUTHORIZATION_FAILED})

    _pinged(cluster)  # no BrokerUnavailable


class _ClusterSilentByName(_Cluster):
    """Answers the listing, but not a question about one topic (a timeout)."""

    def list_topics(self, topic: str | None = None, timeout: float = -1):
        if topic is not None:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT))
        return super().list_topics(topic, timeout)


def test_a_topic_the_cluster_did_not_say_anything_about_is_not_taken_for_missing():
    # The listing came back, so the cluster is there: an unanswered question about the
    # DLQ says nothing of whether it exists, and must not fail readiness naming it.
    cluster = _ClusterSilentByName({"moderation"}, {})

    _pinged(cluster)  # no BrokerUnavailable


def test_a_cluster_with_both_topics_asks_nothing_more():
    cluster = _Cluster(set(TOPICS), {})  # a question by name would raise KeyError

    _pinged(cluster)
