"""Creates the moderation topic and its dead-letter topic; safe to run any number of times.

Run as `python -m shared.kafka.topics` (what `make topics` does); `python -m infra up`
and the test fixtures call `ensure_topics` with their own settings.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from concurrent.futures import Future

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    ConfigResource,
    NewTopic,
    ResourceType,
    TopicMetadata,
)

from shared.kafka.config import MAX_RECORD_BYTES, MAX_TASK_RECORD_BYTES, connection_config
from shared.settings import Settings

log = logging.getLogger(__name__)

TIMEOUT_S = 15.0
# The longest one blocking metadata request may take: librdkafka's call holds the main
# thread in C, where a stop signal's handler cannot run, so the runner's start-up would
# answer SIGTERM only when a 15 s wait for a broker that does not answer ran out.
METADATA_SLICE_S = 0.5


class TopicSetupError(RuntimeError):
    """A topic could not be created or deleted (broker down, bad partition count, ...)."""


def ensure_topics(
    settings: Settings, timeout_s: float = TIMEOUT_S, admin: AdminClient | None = None
) -> dict[str, int]:
    """Create both topics unless they exist, and wait until every partition has a leader.

    Returns each topic's partition count as the broker has it: a topic that existed keeps
    its own, whatever the settings ask for."""
    topics = new_topics(settings)
    wanted = {topic.topic: topic.num_partitions for topic in topics}
    admin = admin or _admin(settings)
    servers = settings.kafka_bootstrap_servers
    # A topic there already is refused before the other is made: a job that refuses one
    # must not leave the other behind, made by a run that reported failure.
    listed = _list_topics(admin, servers, timeout_s)
    existing = sorted(set(listed) & set(wanted))
    if existing and (configs := _configs_of(admin, existing, servers, timeout_s)) is not None:
        _refuse_configs(settings, configs)
    _warn_of_few_replicas(settings, {name: listed[name] for name in existing})
    # Only those missing: an account that may not create topics (they were made with
    # Terraform, say) is refused CreateTopics even for a topic that exists.
    missing = [topic for topic in topics if topic.topic not in existing]
    futures = (
        admin.create_topics(missing, request_timeout=timeout_s, operation_timeout=timeout_s)
        if missing
        else {}
    )
    for name, future in futures.items():
        error = _outcome(
            future,
            timeout_s,
            f"Kafka at {servers} did not create topic {name!r} (is the broker reachable there?)",
        )
        if error is not None and error.code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise TopicSetupError(
                f"could not create topic {name!r} with {wanted[name]} partitions "
                f"on {servers}: {error.str()}"
            )
    partitions = _wait_until_led(admin, list(wanted), servers, timeout_s)
    configs = _configs_of(admin, list(wanted), servers, timeout_s)
    if configs is not None:
        _check_configs(settings, configs)
    return partitions


def _list_topics(admin: AdminClient, servers: str, timeout_s: float) -> dict[str, TopicMetadata]:
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        try:
            return admin.list_topics(timeout=max(0.1, min(METADATA_SLICE_S, remaining))).topics
        except KafkaException as exc:
            if time.monotonic() >= deadline:
                raise _unreadable(admin, servers, exc) from exc


def _unreadable(admin: AdminClient, servers: str, exc: KafkaException) -> TopicSetupError:
    # librdkafka says why ("Connection refused", "SSL handshake failed ... a PLAINTEXT
    # listener?") in its log lines, which reach our log only when the client is polled:
    # the error itself says no more than "Broker transport failure".
    admin.poll(0)
    return TopicSetupError(f"could not read the topics of {servers}: {exc}")


def _warn_of_few_replicas(settings: Settings, topics: dict[str, TopicMetadata]) -> None:
    """A topic made before, or elsewhere, on fewer replicas than the settings ask for: an
    acknowledged task lives on fewer disks than the deployment believes."""
    wanted = settings.kafka_replication_factor
    for name, topic in topics.items():
        replicas = min((len(p.replicas) for p in topic.partitions.values()), default=wanted)
        if replicas < wanted:
            log.warning(
                f"topic {name!r} has {replicas} replica(s) of a partition, fewer than "
                f"KAFKA_REPLICATION_FACTOR={wanted}: this job changes no existing topic "
                "(kafka-reassign-partitions.sh adds replicas)"
            )


# Far above the largest task record our producers write (two bigint ids, a key, the
# batch's own overhead), far below any limit a broker would be given on purpose.
MIN_TASK_RECORD_LIMIT = 1024
# What a dead letter adds to the record it carries: our x-* headers, the exception
# message among them cut to 1,000 characters.
LETTER_HEADERS_ALLOWANCE = 16 * 1024
# Tasks wait in `moderation` for as long as no consumer reads it: a retention shorter
# than an outage deletes them unread (`republish` sends them again).
SHORT_RETENTION_MS = 24 * 60 * 60 * 1000


def _check_configs(settings: Settings, configs: dict[str, dict[str, str]]) -> None:
    """Refuse an existing topic whose settings would lose or refuse tasks; warn of a short
    retention, or letters too large for the DLQ. Topics made elsewhere (Terraform, a
    managed console) keep their own settings, and this job changes none."""
    _refuse_configs(settings, configs)
    _warn_of_configs(settings, configs)


def _refuse_configs(settings: Settings, configs: dict[str, dict[str, str]]) -> None:
    """TopicSetupError for a topic of `configs` (one or both) that would lose or refuse tasks."""
    tasks, letters = settings.kafka_moderation_topic, settings.kafka_dlq_topic
    for name in (tasks, letters):
        if name in configs and "compact" in configs[name].get("cleanup.policy", "delete"):
            # Compaction keeps one record per key, and records are keyed by item_id:
            # every earlier task of an ad (or letter of a key) would vanish unread.
            raise TopicSetupError(
                f"topic {name!r} has cleanup.policy={configs[name]['cleanup.policy']}, which "
                "keeps only the last record of each key: set it to delete "
                f"(kafka-configs.sh --alter --entity-type topics --entity-name {name} "
                "--add-config cleanup.policy=delete)"
            )
    task_limit = int(configs.get(tasks, {}).get("max.message.bytes", MAX_TASK_RECORD_BYTES))
    if task_limit < MIN_TASK_RECORD_LIMIT:
        raise TopicSetupError(
            f"topic {tasks!r} has max.message.bytes={task_limit}, too small for a task "
            f"record: give it at least {MIN_TASK_RECORD_LIMIT} ({MAX_TASK_RECORD_BYTES} "
            "is what this job creates it with)"
        )


def _warn_of_configs(settings: Settings, configs: dict[str, dict[str, str]]) -> None:
    """Warnings for settings of both topics that may hold back records."""
    tasks, letters = settings.kafka_moderation_topic, settings.kafka_dlq_topic
    task_limit = int(configs[tasks].get("max.message.bytes", MAX_TASK_RECORD_BYTES))
    letter_limit = int(configs[letters].get("max.message.bytes", MAX_RECORD_BYTES))
    if letter_limit < task_limit + LETTER_HEADERS_ALLOWANCE:
        # A warning, not a refusal: two topics made with a broker's defaults are like
        # this, and only a poison record near the limit is affected. Its letter stays in
        # the dead_letters table, which the relay then tries to publish again and again.
        log.warning(
            f"topic {letters!r} has max.message.bytes={letter_limit}, less than "
            f"{tasks!r} takes ({task_limit}) plus {LETTER_HEADERS_ALLOWANCE} for a dead "
            "letter's headers: a record that large would be dead-lettered in PostgreSQL "
            f"but never published; raise it to {task_limit + LETTER_HEADERS_ALLOWANCE}"
        )
    retention_ms = int(configs[tasks].get("retention.ms", -1))
    if 0 <= retention_ms < SHORT_RETENTION_MS:
        log.warning(
            f"topic {tasks!r} keeps records for {retention_ms / 1000:g} s (retention.ms): "
            "tasks no consumer reads within that are deleted unread, and wait for "
            "`python -m shared.moderation.republish`"
        )
    retention_bytes = int(configs[tasks].get("retention.bytes", -1))
    if retention_bytes >= 0:
        log.warning(
            f"topic {tasks!r} keeps at most {retention_bytes} bytes a partition "
            "(retention.bytes): a backlog past that is deleted unread, and waits for "
            "`python -m shared.moderation.republish`"
        )
    wanted_in_sync = min_insync_replicas(settings.kafka_replication_factor)
    for name in (tasks, letters):
        in_sync = int(configs[name].get("min.insync.replicas", wanted_in_sync))
        if in_sync < wanted_in_sync:
            log.warning(
                f"topic {name!r} has min.insync.replicas={in_sync}: an acknowledged record "
                f"may be on the leader alone, and lost with its disk; set it to {wanted_in_sync}"
            )


_NOT_ALLOWED = (KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED)


def _configs_of(
    admin: AdminClient, names: list[str], servers: str, timeout_s: float
) -> dict[str, dict[str, str]] | None:
    """Each topic's settings as the broker applies them (its defaults included); None,
    with a warning, where the account may not read them (an ACL without DescribeConfigs):
    the check is advice, and the topics themselves are there."""
    futures = admin.describe_configs(
        [ConfigResource(ResourceType.TOPIC, name) for name in names], request_timeout=timeout_s
    )
    configs = {}
    for resource, future in futures.items():
        late = f"Kafka at {servers} did not describe topic {resource.name!r}"
        if (error := _outcome(future, timeout_s, late)) is not None:
            if error.code() in _NOT_ALLOWED:
                log.warning(
                    f"topic {resource.name!r}'s settings not checked: {error.str()} (the "
                    "account may not describe its configs)"
                )
                return None
            raise TopicSetupError(f"could not read topic {resource.name!r}'s settings: {error}")
        entries = future.result()
        configs[resource.name] = {
            key: entry.value for key, entry in entries.items() if entry.value is not None
        }
    return configs


def min_insync_replicas(replication_factor: int) -> int:
    """All replicas but one, and at most two: 1 for 1 or 2 replicas, 2 for 3 or more."""
    return max(1, min(2, replication_factor - 1))


# How long the DLQ keeps a record: a month for someone to read it, where the brokers'
# default of 7 days is also the shortest window `prune` keeps letters' rows for, so a
# poison record could be gone from both unread.
DLQ_RETENTION_MS = 30 * 24 * 3600 * 1000


def new_topics(settings: Settings) -> list[NewTopic]:
    """Both topics as the settings ask for them."""
    replicas = settings.kafka_replication_factor
    return [
        NewTopic(
            name,
            num_partitions=partitions,
            replication_factor=replicas,
            config={
                **extra,
                # The DLQ takes more than `moderation` lets in, so a poison record is
                # always dead-lettered as it came, plus our headers.
                "max.message.bytes": str(max_bytes),
                # With acks=all a record is acknowledged once every replica in sync has
                # it, and with Kafka's default of 1 that may be the leader alone: a task
                # marked published would be lost with one disk. Two copies from three
                # replicas on, so one broker may be down (a rolling restart) while
                # publishes go on; with fewer in sync a publish fails and the task waits
                # in the outbox (its 202 was sent all the same).
                "min.insync.replicas": str(min_insync_replicas(replicas)),
            },
        )
        for name, partitions, max_bytes, extra in (
            (
                settings.kafka_moderation_topic,
                settings.kafka_moderation_partitions,
                MAX_TASK_RECORD_BYTES,
                {},
            ),
            (
                settings.kafka_dlq_topic,
                settings.kafka_dlq_partitions,
                MAX_RECORD_BYTES,
                {"retention.ms": str(DLQ_RETENTION_MS)},
            ),
        )
    ]


def delete_topics(settings: Settings, timeout_s: float = TIMEOUT_S) -> None:
    """Delete both topics; a topic that does not exist is not an error."""
    names = [settings.kafka_moderation_topic, settings.kafka_dlq_topic]
    admin = _admin(settings)  # held: futures of a garbage-collected client fail at once
    futures = admin.delete_topics(names, request_timeout=timeout_s, operation_timeout=timeout_s)
    for name, future in futures.items():
        error = _outcome(future, timeout_s, f"topic {name!r} was not deleted")
        if error is not None and error.code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
            raise TopicSetupError(f"could not delete topic {name!r}: {error.str()}")


def _outcome(future: Future[None], timeout_s: float, late: str) -> KafkaError | None:
    """The error an admin request ended with, None on success.

    Read with exception(), not result(): a raised and caught exception would tie
    this frame, and with it the client, into a reference cycle, and the client
    would keep its threads and connections until the next garbage collection.
    """
    try:
        error = future.exception(timeout=timeout_s)
    except TimeoutError:
        raise TopicSetupError(f"{late} within {timeout_s:.0f} s") from None
    return error.args[0] if error is not None else None


def _admin(settings: Settings) -> AdminClient:
    return AdminClient(connection_config(settings))


def _wait_until_led(
    admin: AdminClient, names: list[str], servers: str, timeout_s: float
) -> dict[str, int]:
    # A created topic reaches the broker's metadata a moment later; a producer
    # started before that would see it as unknown.
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            metadata = admin.list_topics(
                timeout=max(0.1, min(METADATA_SLICE_S, deadline - time.monotonic()))
            )
        except KafkaException as exc:
            if time.monotonic() < deadline:
                continue
            raise _unreadable(admin, servers, exc) from exc
        topics = [metadata.topics.get(name) for name in names]
        if all(
            topic is not None
            and topic.error is None
            and topic.partitions
            and all(partition.leader >= 0 for partition in topic.partitions.values())
            for topic in topics
        ):
            return {name: len(topic.partitions) for name, topic in zip(names, topics, strict=True)}
        if time.monotonic() > deadline:
            raise TopicSetupError(
                f"topics {names} on {servers} still lack partition leaders after {timeout_s:.0f} s"
            )
        time.sleep(0.1)


def main(argv: Sequence[str] | None = None) -> int:
    from shared.command_line import take_no_arguments
    from shared.settings import InvalidSettings, get_settings

    take_no_arguments("python -m shared.kafka.topics", __doc__, argv)
    try:
        settings = get_settings()
        partitions = ensure_topics(settings)
    except (TopicSetupError, InvalidSettings) as error:
        print(f"topics not ready: {error}", file=sys.stderr)
        return 1
    print(f"topics ready on {settings.kafka_bootstrap_servers}: {describe(settings, partitions)}")
    return 0


def describe(settings: Settings, partitions: dict[str, int]) -> str:
    """Each topic with the partitions it has, and a word where the settings ask for others."""
    asked = {
        settings.kafka_moderation_topic: (
            "KAFKA_MODERATION_PARTITIONS",
            settings.kafka_moderation_partitions,
        ),
        settings.kafka_dlq_topic: ("KAFKA_DLQ_PARTITIONS", settings.kafka_dlq_partitions),
    }
    parts = []
    for name, count in partitions.items():
        setting, wanted = asked[name]
        note = ""
        if count != wanted:
            note = f"; {setting} asks for {wanted}, which only a new topic gets"
        if count < wanted:
            note += " (grow this one with kafka-topics.sh --alter --partitions)"
        parts.append(f"{name} ({count} partitions{note})")
    return ", ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
