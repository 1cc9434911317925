"""Task load for the fault tests: many tasks at once, their records on Kafka, and what
PostgreSQL and the consumer group say about them afterwards."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

import psycopg
from confluent_kafka import Consumer, ConsumerGroupState, TopicPartition
from confluent_kafka.admin import AdminClient

from shared.bootstrap import Services
from shared.kafka.envelope import encode_task_message
from shared.settings import Settings
from tests.integration.kafka_records import produce_raw

ADMIN_TIMEOUT_S = 10.0
# For consumers whose reads `reads_of_ads_blocked` holds up: longer than any block.
LOCK_PROOF_STATEMENT_TIMEOUT_MS = 60_000


@dataclass(frozen=True, slots=True)
class Outcome:
    """A finished task as PostgreSQL holds it; equal only if nothing was rewritten."""

    task_id: int
    status: str
    probability: float | None
    model_version: str | None
    attempts: int
    processed_at: datetime | None


def create_published_tasks(services: Services, item_ids: list[int]) -> list[tuple[int, int]]:
    """One pending task per ad, in one statement; (task_id, item_id) pairs.

    Marked published, because the test puts the records on Kafka itself: a relay
    running meanwhile must not add records of its own.
    """
    with services.db.transaction() as tx:
        rows = tx.conn.execute(
            """
            INSERT INTO moderation_results (item_id, published_at)
            SELECT item_id, now() FROM unnest(%s::bigint[]) AS item_id
            RETURNING id, item_id
            """,
            (item_ids,),
        ).fetchall()
    return [(row[0], row[1]) for row in rows]


def produce_tasks(settings: Settings, tasks: list[tuple[int, int]]) -> None:
    produce_raw(settings, [encode_task_message(task_id, item_id) for task_id, item_id in tasks])


def status_counts(services: Services) -> Counter[str]:
    with services.db.transaction() as tx:
        rows = tx.conn.execute(
            "SELECT status, count(*) FROM moderation_results GROUP BY status"
        ).fetchall()
    return Counter({status: count for status, count in rows})


def pending_among(services: Services, tasks: list[tuple[int, int]]) -> int:
    """How many of `tasks` are still pending."""
    with services.db.transaction() as tx:
        return tx.conn.execute(
            "SELECT count(*) FROM moderation_results WHERE id = ANY(%s) AND status = 'pending'",
            ([task_id for task_id, _ in tasks],),
        ).fetchone()[0]


def outcomes(services: Services, *, finished_only: bool = False) -> dict[int, Outcome]:
    where = "WHERE status <> 'pending'" if finished_only else ""
    with services.db.transaction() as tx:
        rows = tx.conn.execute(
            "SELECT id, status, probability, model_version, attempts, processed_at"
            f" FROM moderation_results {where} ORDER BY id"
        ).fetchall()
    return {row[0]: Outcome(*row) for row in rows}


@contextmanager
def reads_of_ads_blocked(database_url: str) -> Iterator[Callable[[], int]]:
    """Every read of `ads` waits until the block ends (an ACCESS EXCLUSIVE lock held open):
    a consumer's batches then stay in flight, their tasks unwritten. Yields a count of
    the statements waiting. Give the consumers a statement timeout longer than the block
    (`LOCK_PROOF_STATEMENT_TIMEOUT_MS`): their reads would otherwise fail, each counting
    an attempt against its tasks."""
    with psycopg.connect(database_url) as lock, psycopg.connect(database_url) as probe:
        lock.execute("LOCK TABLE ads IN ACCESS EXCLUSIVE MODE")
        probe.autocommit = True

        def waiting() -> int:
            return probe.execute(
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'ads'::regclass"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ).fetchone()[0]

        try:
            yield waiting
        finally:
            lock.rollback()


def dead_letter_rows(services: Services) -> int:
    with services.db.transaction() as tx:
        return tx.conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0]


class ConsumerGroupProbe:
    """What the broker says about the test's consumer group, through one admin client and
    one (never subscribing, so never joining) consumer; close() them when done."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
        self._offsets = Consumer(
            {
                "bootstrap.servers": settings.kafka_bootstrap_servers,
                "group.id": settings.kafka_consumer_group,
                "enable.auto.commit": False,
            }
        )

    def __enter__(self) -> ConsumerGroupProbe:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._offsets.close()

    def unconsumed_records(self) -> int:
        """Records of the moderation topic past the group's committed offsets (all, if none)."""
        topic = self._settings.kafka_moderation_topic
        metadata = self._offsets.list_topics(topic, timeout=ADMIN_TIMEOUT_S)
        partitions = [TopicPartition(topic, p) for p in metadata.topics[topic].partitions]
        behind = 0
        for partition in self._offsets.committed(partitions, timeout=ADMIN_TIMEOUT_S):
            low, high = self._offsets.get_watermark_offsets(partition, timeout=ADMIN_TIMEOUT_S)
            behind += high - (partition.offset if partition.offset >= 0 else low)
        return behind

    def partitions_not_committed(self) -> list[int]:
        """Partitions of the moderation topic that hold records but no committed offset."""
        topic = self._settings.kafka_moderation_topic
        metadata = self._offsets.list_topics(topic, timeout=ADMIN_TIMEOUT_S)
        partitions = [TopicPartition(topic, p) for p in metadata.topics[topic].partitions]
        waiting = []
        for partition in self._offsets.committed(partitions, timeout=ADMIN_TIMEOUT_S):
            low, high = self._offsets.get_watermark_offsets(partition, timeout=ADMIN_TIMEOUT_S)
            if high > low and partition.offset < 0:
                waiting.append(partition.partition)
        return sorted(waiting)

    def assignment(self) -> list[set[int]]:
        """The partitions of each member, once the group is stable ([] while it rebalances)."""
        group = self._settings.kafka_consumer_group
        futures = self._admin.describe_consumer_groups([group], request_timeout=ADMIN_TIMEOUT_S)
        description = futures[group].result(timeout=ADMIN_TIMEOUT_S)
        if description.state != ConsumerGroupState.STABLE:
            return []
        return [
            {tp.partition for tp in member.assignment.topic_partitions}
            for member in description.members
        ]
