"""The poll loop letting a partition go while its batch waits out the retry schedule: a
revoke ends the wait instead of holding up the rebalance, and a partition lost and
given back never runs two batches at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from confluent_kafka import KafkaError, TopicPartition

from shared.cancellation import BatchLetGo, ShutdownRequested
from shared.kafka.poll_loop import REVOKE_WAIT_S, PartitionedPollLoop
from shared.kafka.record import ConsumedRecord
from tests.fakes import fake_services
from tests.unit.fake_kafka import TOPIC, Message, RecordingConsumer, assign_partitions

BATCH = 10
RETRY_WAIT_S = 5.0  # what a batch waits for its next attempt, here


class _WaitingHandler:
    """Each batch waits out one retry wait through `Services.sleep`, as a batch does
    while the database or the model is down, and records how that ended."""

    def __init__(self) -> None:
        self.services = fake_services()
        self.services.sleeper = None  # real, interruptible waits
        self.waiting = threading.Semaphore(0)
        self.ended: dict[int, str] = {}

    def __call__(self, records: list[ConsumedRecord]) -> None:
        partition = records[0].partition
        self.waiting.release()
        try:
            self.services.sleep(RETRY_WAIT_S)
        except ShutdownRequested as abandoned:
            self.ended[partition] = type(abandoned).__name__
            raise
        self.ended[partition] = "waited"


def _assigned_loop(
    consumer: RecordingConsumer,
    handler: _WaitingHandler,
    *,
    max_workers: int = 4,
    revoke_wait_s: float = REVOKE_WAIT_S,
) -> PartitionedPollLoop:
    loop = PartitionedPollLoop(
        consumer,  # type: ignore[arg-type]
        TOPIC,
        handler,
        batch_size=BATCH,
        poll_timeout_s=0.1,
        max_workers=max_workers,
        revoke_wait_s=revoke_wait_s,
    )
    assign_partitions(loop, consumer)
    return loop


@pytest.fixture
def loop():
    consumer, handler = RecordingConsumer(), _WaitingHandler()
    loop = _assigned_loop(consumer, handler)
    yield loop, consumer, handler
    handler.services.stopping.set()  # whatever still waits
    loop._executor.shutdown(wait=True)


def _dispatch_batches(loop, handler, partitions: list[int]) -> None:
    loop._accept([Message(p, offset, b"{}") for p in partitions for offset in range(BATCH)])
    loop._dispatch()
    for _ in partitions:
        assert handler.waiting.acquire(timeout=5), "a batch never started"


def test_a_revoke_ends_its_partitions_retry_wait_and_stores_nothing_for_that_batch(loop):
    loop, consumer, handler = loop
    _dispatch_batches(loop, handler, [0])

    started = time.monotonic()
    loop._on_revoke(consumer, [TopicPartition(TOPIC, 0)])  # type: ignore[arg-type]
    revoke_took_s = time.monotonic() - started

    # Before, the revoke waited out the whole wait (35 s with the defaults).
    assert revoke_took_s < RETRY_WAIT_S / 2
    assert handler.ended == {0: BatchLetGo.__name__}
    # The new owner starts at this batch: its attempts so far are on the task rows.
    assert consumer.stored == []


def test_a_revoke_leaves_the_waits_of_the_partitions_this_member_keeps(loop):
    loop, consumer, handler = loop
    _dispatch_batches(loop, handler, [0, 1])
    kept = loop._partitions[(TOPIC, 1)].inflight

    loop._on_revoke(consumer, [TopicPartition(TOPIC, 0)])  # type: ignore[arg-type]

    assert handler.ended == {0: BatchLetGo.__name__}
    assert kept is not None and not kept.done()


def test_a_partition_lost_and_given_back_waits_for_its_old_batch_before_the_next(loop):
    loop, consumer, handler = loop
    release = threading.Event()
    handler.services.sleep = lambda seconds: release.wait(seconds)  # a wait no let-go ends
    _dispatch_batches(loop, handler, [0])
    old_batch = loop._partitions[(TOPIC, 0)].inflight

    loop._on_lost(consumer, [TopicPartition(TOPIC, 0)])  # type: ignore[arg-type]
    loop._on_assign(consumer, [TopicPartition(TOPIC, 0)])  # type: ignore[arg-type]
    loop._accept([Message(0, offset, b"{}") for offset in range(BATCH)])  # redelivered
    loop._dispatch()

    assert loop._partitions[(TOPIC, 0)].inflight is None  # held back: the old one runs
    release.set()
    old_batch.result(timeout=5)
    loop._dispatch()
    assert loop._partitions[(TOPIC, 0)].inflight is not None


def test_a_lost_partitions_finished_batch_is_forgotten_even_if_it_never_comes_back(loop):
    loop, consumer, handler = loop
    release = threading.Event()
    handler.services.sleep = lambda seconds: release.wait(seconds)
    _dispatch_batches(loop, handler, [0])
    loop._on_lost(consumer, [TopicPartition(TOPIC, 0)])  # type: ignore[arg-type]
    orphan = loop._orphans[(TOPIC, 0)]

    release.set()
    orphan.result(timeout=5)
    loop._reap_finished()

    assert loop._orphans == {}


@contextmanager
def _batches_no_let_go_ends(max_workers: int) -> Iterator[tuple]:
    """A loop whose batches wait on `release`, which no let-go ends (a statement on a
    frozen database, say), and whose revokes wait 0.3 s for them. Released after 3 s
    in any case, so that a revoke waiting for a batch could not hang a test."""
    consumer, handler = RecordingConsumer(), _WaitingHandler()
    release = threading.Event()
    handler.services.sleep = lambda seconds: release.wait(seconds)
    loop = _assigned_loop(consumer, handler, max_workers=max_workers, revoke_wait_s=0.3)
    backstop = threading.Timer(3.0, release.set)
    backstop.start()
    try:
        yield loop, consumer, handler, release
    finally:
        backstop.cancel()
        release.set()
        handler.services.stopping.set()
        loop._executor.shutdown(wait=True)


def test_a_batch_still_running_past_the_revokes_wait_is_left_uncommitted_as_an_orphan():
    # One that must not hold up the rebalance, and the group's with it, while it lasts.
    with _batches_no_let_go_ends(max_workers=4) as (loop, consumer, handler, release):
        _dispatch_batches(loop, handler, [0])
        stuck = loop._partitions[(TOPIC, 0)].inflight

        started = time.monotonic()
        loop._on_revoke(consumer, [TopicPartition(TOPIC, 0)])  # type: ignore[arg-type]
        revoke_took_s = time.monotonic() - started

        assert 0.3 <= revoke_took_s < 2
        assert not stuck.done()
        assert loop._orphans == {(TOPIC, 0): stuck}
        assert consumer.stored == []  # nothing of the stuck batch

        # Given back, the partition dispatches nothing until its old batch is over.
        loop._on_assign(consumer, [TopicPartition(TOPIC, 0)])  # type: ignore[arg-type]
        loop._accept([Message(0, offset, b"{}") for offset in range(BATCH)])
        loop._dispatch()
        assert loop._partitions[(TOPIC, 0)].inflight is None
        release.set()
        stuck.result(timeout=5)
        loop._dispatch()
        assert loop._partitions[(TOPIC, 0)].inflight is not None


@pytest.mark.parametrize("letting_go", ["_on_revoke", "_on_lost"])
def test_a_batch_still_queued_for_a_worker_when_its_partition_goes_never_runs(letting_go):
    # One worker: partition 1's batch waits behind partition 0's. Revoked or lost, the
    # partition's next owner has its records.
    with _batches_no_let_go_ends(max_workers=1) as (loop, consumer, handler, release):
        loop._accept([Message(p, offset, b"{}") for p in (0, 1) for offset in range(BATCH)])
        loop._dispatch()
        assert handler.waiting.acquire(timeout=5), "partition 0's batch never started"
        queued = loop._partitions[(TOPIC, 1)].inflight

        gone = [TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)]
        getattr(loop, letting_go)(consumer, gone)
        release.set()
        loop._executor.shutdown(wait=True)

        assert queued.cancelled()
        assert list(loop._orphans) == [(TOPIC, 0)]
        assert 1 not in handler.ended  # its handler never ran
        assert consumer.stored == []


def test_a_stopped_loop_stores_its_last_batch_and_commits_it_synchronously_before_closing():
    consumer = RecordingConsumer()
    consumer.to_fetch = [Message(0, 0, b"{}")]
    stop = threading.Event()
    # The batch asks the loop to stop as it ends, as a SIGTERM during a batch would.
    loop = PartitionedPollLoop(
        consumer,  # type: ignore[arg-type]
        TOPIC,
        lambda records: stop.set(),
        batch_size=BATCH,
        poll_timeout_s=0.05,
        max_workers=1,
    )

    loop.run(stop)

    # Synchronous: the process exits next, and an asynchronous commit could die with it.
    assert consumer.commits == [(False, [(0, 1)])]
    assert consumer.closed


def test_a_failed_commit_is_logged_but_one_with_no_offset_to_commit_is_not(caplog):
    consumer = RecordingConsumer()
    loop = PartitionedPollLoop(
        consumer,  # type: ignore[arg-type]
        TOPIC,
        lambda records: None,
        batch_size=BATCH,
        poll_timeout_s=0.05,
        max_workers=1,
    )

    consumer.commit_error = KafkaError(KafkaError._NO_OFFSET)
    loop._commit()
    assert "offset commit failed" not in caplog.text
    consumer.commit_error = KafkaError(KafkaError._TRANSPORT)
    loop._commit()

    assert [r.levelname for r in caplog.records if r.message == "offset commit failed"] == [
        "WARNING"
    ]
    loop._executor.shutdown(wait=True)
