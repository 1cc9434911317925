"""The poll loop gives up on a member the group never takes back: after a broker restart
a client was seen never to rejoin, polling with no partitions for good. A member that the
group gives nothing (more members than partitions) is not such a member."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest
from confluent_kafka import TopicPartition

from shared.kafka.config import consumer_config
from shared.kafka.poll_loop import REJOIN_TIMEOUT_S, PartitionedPollLoop
from shared.runner.workers import ConsumerWorker
from shared.settings import Settings
from tests.unit.fake_kafka import PARTITIONS, TOPIC, RecordingConsumer

POLL_STEP_S = 60.0  # what each poll moves the loop's clock on


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _GroupScript(RecordingConsumer):
    """At its first poll, the member's partitions are lost (its session timed out), or
    revoked when `taken_by` is "on_revoke" (a rebalance began); what follows is
    `after_loss` (None: the group never assigns it anything again). Each poll moves the
    clock on; the loop is stopped after `polls`."""

    def __init__(
        self,
        clock: _Clock,
        stop: threading.Event,
        after_loss,
        polls: int,
        taken_by: str = "on_lost",
    ) -> None:
        super().__init__()
        self.clock, self.stop, self.after_loss, self.polls_left = clock, stop, after_loss, polls
        self.taken_by = taken_by
        self.callbacks: dict = {}
        self.first_poll = True

    def subscribe(self, topics, **callbacks) -> None:
        self.callbacks = callbacks
        super().subscribe(topics, **callbacks)

    def poll(self, timeout: float):
        if self.first_poll:
            self.first_poll = False
            taken = [TopicPartition(TOPIC, p) for p in PARTITIONS]
            self.callbacks[self.taken_by](self, taken)
            if self.after_loss is not None:
                self.after_loss(self)
        self.polls_left -= 1
        if self.polls_left <= 0:
            self.stop.set()
        self.clock.now += POLL_STEP_S
        return None


def _run(after_loss, polls: int, taken_by: str = "on_lost") -> None:
    clock, stop = _Clock(), threading.Event()
    consumer = _GroupScript(clock, stop, after_loss, polls, taken_by)
    loop = PartitionedPollLoop(
        consumer,  # type: ignore[arg-type]
        TOPIC,
        lambda records: None,
        batch_size=10,
        poll_timeout_s=0.1,
        max_workers=2,
        clock=clock,
    )
    loop.run(stop)


def test_a_member_never_assigned_again_after_losing_its_partitions_stops_the_loop():
    polls = int(REJOIN_TIMEOUT_S // POLL_STEP_S) + 3

    with pytest.raises(RuntimeError, match="no assignment from the group for"):
        _run(after_loss=None, polls=polls)


def test_a_member_never_assigned_again_after_a_revoke_stops_the_loop():
    # The rebalance a revoke begins can end without this member as well: one that never
    # sends its JoinGroup again waits for an assignment from then on.
    polls = int(REJOIN_TIMEOUT_S // POLL_STEP_S) + 3

    with pytest.raises(RuntimeError, match="no assignment from the group for"):
        _run(after_loss=None, polls=polls, taken_by="on_revoke")


def test_the_rejoin_timeout_outlasts_two_rounds_of_the_longest_rebalance_and_a_session():
    # The group waits up to the rebalance timeout (max.poll.interval.ms) for its members,
    # and a member dropped at its end may force another round: a healthy member may wait
    # that long for its assignment, and must not be taken for stuck meanwhile.
    config = consumer_config(Settings(database_url="postgresql://unused"))
    rebalance_s = config["max.poll.interval.ms"] / 1000
    session_s = config["session.timeout.ms"] / 1000
    longest_healthy_wait_s = 2 * rebalance_s + session_s

    assert longest_healthy_wait_s <= REJOIN_TIMEOUT_S


def test_a_member_the_group_gives_no_partition_is_not_taken_for_stuck():
    def rejoined_with_nothing(consumer: _GroupScript) -> None:
        consumer.callbacks["on_assign"](consumer, [])

    # Well past the timeout, polling with an empty assignment: the loop goes on.
    _run(after_loss=rejoined_with_nothing, polls=int(REJOIN_TIMEOUT_S // POLL_STEP_S) * 3)


def test_a_consumer_worker_counts_as_dead_once_its_loop_gives_up():
    # Not once the loop has closed its client: one that cannot reach its coordinator may
    # take a minute to close, or never, and the process must exit for its restart.
    worker = ConsumerWorker(Settings(database_url="postgresql://unused"), lambda records: None)
    closing = threading.Event()
    worker._thread = threading.Thread(target=closing.wait, daemon=True)
    worker._thread.start()
    worker._loop = SimpleNamespace(stuck=None)  # type: ignore[assignment]
    try:
        assert worker.is_alive()
        worker._loop.stuck = "no assignment from the group for 611 s"
        assert not worker.is_alive()
    finally:
        closing.set()
