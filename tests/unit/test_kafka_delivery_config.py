"""The client settings the delivery guarantees rest on (README, "Delivery guarantees").

Each is a line of shared/kafka/config.py whose loss no other test would notice at once:
a producer without idempotence duplicates or reorders records only when a broker
answers late, and a consumer that stores offsets itself loses tasks only when it
crashes between a fetch and its batch's commit (tests/fault/test_consumer_crashes.py).
"""

from __future__ import annotations

from confluent_kafka import Consumer, Producer

from shared.kafka.config import consumer_config, producer_config
from shared.settings import read_settings


def test_the_producer_waits_for_every_in_sync_replica_and_cannot_duplicate_a_retry():
    config = producer_config(read_settings())

    assert config["enable.idempotence"] is True
    assert config["acks"] == "all"
    Producer(config).flush(0)  # librdkafka takes the combination (it refuses acks=1 with it)


def test_the_consumer_commits_only_the_offsets_it_stored_after_a_batch_was_durable():
    config = consumer_config(read_settings())

    assert config["enable.auto.offset.store"] is False
    assert config["enable.auto.commit"] is True
    Consumer(config).close()


def test_the_consumer_joins_the_configured_group_and_a_new_group_starts_from_the_first_task():
    settings = read_settings().model_copy(update={"kafka_consumer_group": "moderation-canary"})

    config = consumer_config(settings)

    assert config["group.id"] == "moderation-canary"
    # A group with no committed offset (new, or its offsets expired) must not skip the
    # tasks already waiting: "latest" would leave them pending for good.
    assert config["auto.offset.reset"] == "earliest"
