"""librdkafka configuration for the producer and the consumer, built from Settings."""

from __future__ import annotations

from typing import Any

from shared.kafka.client_logs import client_logger
from shared.settings import PRODUCER_LINGER_MS, Settings

# The biggest record `moderation` takes (Kafka's usual 1 MiB), and what the producer
# and the DLQ take: four times as much, so a poison record of any size the topic let
# in is dead-lettered as it was, our headers included.
MAX_TASK_RECORD_BYTES = 1024 * 1024
MAX_RECORD_BYTES = 4 * MAX_TASK_RECORD_BYTES

# How often a client learns the topics' partitions: librdkafka's default is 5 minutes,
# which after a topic grew left running producers off the new partitions, and running
# consumers without them, for as long.
METADATA_REFRESH_MS = 10_000
# The consumer's: the longest between two polls (also the group's rebalance timeout, how
# long a rebalance waits for its members), and without a heartbeat.
MAX_POLL_INTERVAL_MS = 300_000
SESSION_TIMEOUT_MS = 10_000


def connection_config(settings: Settings) -> dict[str, Any]:
    """What every client (producer, consumer, admin) connects with: the brokers, how it
    authenticates and encrypts, and where its log lines go."""
    protocol = settings.kafka_security_protocol
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "logger": client_logger(),
        "security.protocol": protocol,
    }
    if protocol.startswith("sasl_"):
        config["sasl.mechanism"] = settings.kafka_sasl_mechanism
        config["sasl.username"] = settings.kafka_sasl_username
        config["sasl.password"] = settings.kafka_sasl_password
    tls = {
        "ssl.ca.location": settings.kafka_ssl_ca_location,
        "ssl.certificate.location": settings.kafka_ssl_certificate_location,
        "ssl.key.location": settings.kafka_ssl_key_location,
        "ssl.key.password": settings.kafka_ssl_key_password,
    }
    # Each left unset when empty: librdkafka's default CA store is the system's.
    config.update({name: value for name, value in tls.items() if value})
    return config


def producer_config(settings: Settings) -> dict[str, Any]:
    return {
        **connection_config(settings),
        # Idempotence: librdkafka's own retries cannot duplicate or reorder a record.
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": PRODUCER_LINGER_MS,
        "message.max.bytes": MAX_RECORD_BYTES,
        # librdkafka stops retrying a record when we stop waiting for it. That does not
        # make the record unpublished: a request already sent may still be written by a
        # broker that stalled past the timeout, and the relay then sends the record again.
        # A task's second copy is a duplicate the consumer skips; a dead letter's copies
        # carry one `x-dead-letter-id` (shared/moderation/dead_letters.py).
        "message.timeout.ms": settings.publish_timeout_ms,
        "socket.connection.setup.timeout.ms": 5_000,
        # New partitions of a grown topic take their share of the keys within seconds,
        # so the consumers added with them have work at once.
        "topic.metadata.refresh.interval.ms": METADATA_REFRESH_MS,
    }


def consumer_config(settings: Settings) -> dict[str, Any]:
    return {
        **connection_config(settings),
        "group.id": settings.kafka_consumer_group,
        "auto.offset.reset": "earliest",
        # Offsets are stored by us, after the batch's results are committed in
        # PostgreSQL; auto-commit then only commits what we stored.
        "enable.auto.offset.store": False,
        "enable.auto.commit": True,
        "auto.commit.interval.ms": 1_000,
        "fetch.max.bytes": MAX_RECORD_BYTES * 2,
        "max.partition.fetch.bytes": MAX_RECORD_BYTES,
        # A batch may wait out the whole retry schedule (35 s by default).
        "max.poll.interval.ms": MAX_POLL_INTERVAL_MS,
        "session.timeout.ms": SESSION_TIMEOUT_MS,
        "heartbeat.interval.ms": 1_000,
        "enable.partition.eof": False,
        # Partitions added to the topic reach the group at the next metadata refresh,
        # which triggers the rebalance that assigns them. librdkafka's default is 5
        # minutes, while a producer started after the change writes to them at once:
        # their tasks would wait that long, with no lag series to show it.
        "topic.metadata.refresh.interval.ms": METADATA_REFRESH_MS,
    }
