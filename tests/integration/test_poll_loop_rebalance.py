"""The poll loop across a rebalance on the real broker: librdkafka keeps a pause of ours
through a revoke and a later assignment, so a partition paused for flow control when it
was revoked must still deliver once it is assigned back."""

from __future__ import annotations

import contextlib
import threading
import time

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewPartitions

from shared.kafka import poll_loop
from shared.kafka.config import METADATA_REFRESH_MS, consumer_config
from shared.kafka.record import ConsumedRecord
from tests.fault.load import ConsumerGroupProbe
from tests.integration.wiring import running_consumer, wired_services
from tests.waiting import wait_until

OLD, NEW = 20, 5


def _produce_to_partition_0(settings, values: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers})
    for value in values:
        producer.produce(settings.kafka_moderation_topic, value=value, partition=0)
    assert producer.flush(15) == 0


def test_a_partition_paused_when_revoked_delivers_again_once_assigned_back(settings, monkeypatch):
    # Pause at two batches of backlog (4 records) instead of 10,000 records, and stay
    # paused while a batch takes seconds, longer than the rebalance below takes to begin.
    monkeypatch.setattr(poll_loop, "PAUSE_AT_BATCHES", 2)
    settings = settings.model_copy(update={"consumer_batch_size": 2})
    handled: set[bytes] = set()
    lock = threading.Lock()
    fast = threading.Event()

    def handle(records: list[ConsumedRecord]) -> None:
        with lock:
            handled.update(record.value for record in records)
        fast.wait(3)  # a batch waiting out a retry, while the backlog grows

    with wired_services(settings) as services, running_consumer(services, handle) as loop:
        wait_until(lambda: loop._assigned, timeout_s=30, what="the first assignment")
        _produce_to_partition_0(settings, [b"old-%d" % n for n in range(OLD)])
        key = (settings.kafka_moderation_topic, 0)
        wait_until(
            lambda: key in loop._partitions and loop._partitions[key].paused,
            timeout_s=15,
            what="partition 0 paused for flow control",
        )

        # A second member joins and leaves: two rebalances, after which the loop owns
        # every partition again. It commits nothing, so what it read counts for nothing.
        other = Consumer({**consumer_config(settings), "enable.auto.commit": False})
        other.subscribe([settings.kafka_moderation_topic])
        try:
            wait_until(
                lambda: other.poll(0.1) is not None or other.assignment(),
                timeout_s=30,
                what="the second member's assignment",
            )
        finally:
            other.close()
        fast.set()
        wait_until(lambda: len(loop._assigned) == 3, timeout_s=30, what="every partition back")
        _produce_to_partition_0(settings, [b"new-%d" % n for n in range(NEW)])

        expected = {b"old-%d" % n for n in range(OLD)} | {b"new-%d" % n for n in range(NEW)}
        wait_until(lambda: expected <= handled, timeout_s=30, what="every record of partition 0")


def test_partitions_added_while_consumers_run_are_consumed_within_the_metadata_refresh(
    settings,
):
    # Scaling out: the topic grows from 3 partitions to 6 while the group runs, and a
    # producer that knows the new partitions writes to them at once.
    delivered: set[int] = set()
    lock = threading.Lock()

    def handle(records: list[ConsumedRecord]) -> None:
        with lock:
            delivered.update(record.partition for record in records)

    def produce_to(partitions: range) -> None:
        producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers})
        for partition in partitions:
            producer.produce(settings.kafka_moderation_topic, value=b"{}", partition=partition)
        assert producer.flush(15) == 0

    with wired_services(settings) as services, running_consumer(services, handle):
        produce_to(range(3))
        wait_until(
            lambda: delivered == {0, 1, 2}, timeout_s=30, what="the first 3 partitions consumed"
        )
        admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
        (growing,) = admin.create_partitions(
            [NewPartitions(settings.kafka_moderation_topic, 6)]
        ).values()
        growing.result(timeout=15)
        produce_to(range(6))

        # With librdkafka's default refresh this would take up to 5 minutes.
        wait_until(
            lambda: delivered == set(range(6)),
            timeout_s=METADATA_REFRESH_MS / 1000 + 20,
            what="records of the 3 new partitions consumed too",
        )


def test_a_member_the_group_gives_no_partition_is_not_taken_for_stuck(settings):
    # One member more than the topic has partitions: one of them is given nothing, and
    # librdkafka must still end its rebalance with an (empty) assignment for the loop.
    members = settings.kafka_moderation_partitions + 1
    rejoin_timeout_s = 8.0
    with wired_services(settings) as services, contextlib.ExitStack() as running:
        loops = [
            running.enter_context(
                running_consumer(services, lambda records: None, rejoin_timeout_s=rejoin_timeout_s)
            )
            for _ in range(members)
        ]
        with ConsumerGroupProbe(settings) as group:
            wait_until(
                lambda: len(group.assignment()) == members,
                timeout_s=60,
                what=f"a stable group of {members} members",
            )
            assert sorted(len(partitions) for partitions in group.assignment())[0] == 0
        time.sleep(rejoin_timeout_s + 2)

        assert [loop.stuck for loop in loops] == [None] * members
