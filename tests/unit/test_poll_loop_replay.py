"""The poll loop when a batch does not finish: the partition is fetched again from that
batch, nothing after it is stored meanwhile, and a failing handler is not replayed in a
tight loop; and a lost partition, whose batch counts for nothing here."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from prometheus_client import REGISTRY

from shared.cancellation import ShutdownRequested
from shared.kafka import poll_loop
from shared.kafka.poll_loop import PAUSE_AT_BATCHES, PartitionedPollLoop
from shared.kafka.record import ConsumedRecord
from tests.unit.fake_kafka import TOPIC, Message, RecordingConsumer, assign_partitions

BATCH = 10


class _Handler:
    """Runs each batch through `outcome`, which returns or raises, and records the batch."""

    def __init__(self) -> None:
        self.outcome: Callable[[], None] = lambda: None
        self.batches: list[list[int]] = []
        self._lock = threading.Lock()

    def __call__(self, records: list[ConsumedRecord]) -> None:
        with self._lock:
            self.batches.append([record.offset for record in records])
        self.outcome()


@pytest.fixture
def clock():
    """The loop's monotonic clock, moved by hand."""
    return [1000.0]


def _loop_over(
    consumer: RecordingConsumer,
    handler: Callable[[list[ConsumedRecord]], None],
    clock: list[float] | None = None,
    poll_timeout_s: float = 0.1,
) -> PartitionedPollLoop:
    """The loop, on `clock` moved by hand when given, on the real clock otherwise."""
    loop = PartitionedPollLoop(
        consumer,  # type: ignore[arg-type]
        TOPIC,
        handler,
        batch_size=BATCH,
        poll_timeout_s=poll_timeout_s,
        max_workers=4,
        clock=time.monotonic if clock is None else (lambda: clock[0]),
    )
    assign_partitions(loop, consumer)
    return loop


@pytest.fixture
def loop(clock):
    consumer, handler = RecordingConsumer(), _Handler()
    loop = _loop_over(consumer, handler, clock)
    yield loop, consumer, handler
    loop._executor.shutdown(wait=True)


def _queue(loop: PartitionedPollLoop, offsets: range) -> None:
    loop._accept([Message(0, offset, b"{}") for offset in offsets])


def _run_one_batch(loop: PartitionedPollLoop) -> None:
    loop._dispatch()
    loop._reap_finished(waiting=True)


def _raise(error: BaseException) -> Callable[[], None]:
    def outcome() -> None:
        raise error

    return outcome


def test_a_batch_abandoned_for_shutdown_stops_its_partition_before_it(loop):
    loop, consumer, handler = loop
    _queue(loop, range(3 * BATCH))
    _run_one_batch(loop)  # offsets 0-9 done
    handler.outcome = _raise(ShutdownRequested())

    _run_one_batch(loop)  # 10-19 abandoned in a retry wait
    handler.outcome = lambda: None
    _queue(loop, range(10, 3 * BATCH))  # the refetch after the seek
    _run_one_batch(loop)

    # The batch after the abandoned one was never handled, so no offset past 10 is
    # stored, and the next owner (or this consumer, restarted) starts at 10.
    assert handler.batches == [list(range(10)), list(range(10, 20))]
    assert consumer.stored == [(0, 10)]
    assert ("seek", 0, 10) in consumer.calls


def test_a_failed_batch_is_replayed_from_its_first_record_after_a_doubling_wait(loop, clock):
    loop, consumer, handler = loop
    handler.outcome = _raise(RuntimeError("a bug"))
    _queue(loop, range(BATCH))

    _run_one_batch(loop)
    assert consumer.calls == [("seek", 0, 0)]
    _queue(loop, range(BATCH))  # the refetch

    waits = []
    for _ in range(3):
        handled = len(handler.batches)
        _run_one_batch(loop)  # held: not handled again yet
        assert len(handler.batches) == handled
        waited = 0.0
        while len(handler.batches) == handled:
            clock[0] += 0.25
            waited += 0.25
            _run_one_batch(loop)
        waits.append(waited)
        _queue(loop, range(BATCH))

    assert waits == [
        poll_loop.REPLAY_BASE_DELAY_S,
        2 * poll_loop.REPLAY_BASE_DELAY_S,
        4 * poll_loop.REPLAY_BASE_DELAY_S,
    ]
    assert consumer.stored == []

    handler.outcome = lambda: None
    clock[0] += poll_loop.REPLAY_MAX_DELAY_S
    _run_one_batch(loop)
    assert consumer.stored == [(0, BATCH)]
    assert loop._partitions[(TOPIC, 0)].failures_in_a_row == 0


def test_a_failed_batch_is_redone_before_the_records_queued_behind_it(loop, clock):
    loop, consumer, handler = loop
    handler.outcome = _raise(RuntimeError("a bug"))
    _queue(loop, range(3 * BATCH))
    _run_one_batch(loop)  # 0-9 fail; 10-29 were queued behind them

    handler.outcome = lambda: None
    _queue(loop, range(3 * BATCH))  # the refetch after the seek
    clock[0] += poll_loop.REPLAY_BASE_DELAY_S
    _run_one_batch(loop)

    # Handled first, 10-19 would store 20, and the commit would skip the failed batch.
    assert handler.batches == [list(range(BATCH)), list(range(BATCH))]
    assert consumer.stored == [(0, BATCH)]


def test_each_replay_is_counted_and_logged_with_its_batch(loop, caplog):
    loop, _consumer, handler = loop
    handler.outcome = _raise(RuntimeError("a bug"))
    before = REGISTRY.get_sample_value("moderation_batch_replays_total") or 0.0
    _queue(loop, range(5, 5 + BATCH))

    _run_one_batch(loop)

    assert REGISTRY.get_sample_value("moderation_batch_replays_total") - before == 1
    [line] = [r for r in caplog.records if r.getMessage().startswith("batch handler failed")]
    assert (line.partition, line.first_offset, line.last_offset) == (0, 5, 4 + BATCH)
    assert line.failures_in_a_row == 1


def test_the_wait_before_a_replay_stops_growing_at_its_limit(loop, clock):
    loop, _, handler = loop
    handler.outcome = _raise(RuntimeError("a bug"))
    partition_key = (TOPIC, 0)
    for _ in range(12):
        _queue(loop, range(BATCH))
        clock[0] += poll_loop.REPLAY_MAX_DELAY_S
        _run_one_batch(loop)

    partition = loop._partitions[partition_key]
    assert partition.failures_in_a_row == 12
    assert partition.held_until == clock[0] + poll_loop.REPLAY_MAX_DELAY_S


def test_a_paused_partition_that_replays_is_resumed(loop, clock):
    loop, consumer, handler = loop
    handler.outcome = _raise(RuntimeError("a bug"))
    _queue(loop, range(PAUSE_AT_BATCHES * BATCH))
    assert consumer.calls == [("pause", 0)]

    _run_one_batch(loop)

    # The backlog that would have resumed it is dropped for the refetch, so the
    # replay resumes it itself; paused, the partition would never fetch again.
    assert consumer.calls == [("pause", 0), ("seek", 0, 0), ("resume", 0)]
    assert not loop._partitions[(TOPIC, 0)].paused


def test_a_lost_partition_stores_nothing_for_the_batch_it_was_running(loop):
    loop, consumer, handler = loop
    release = threading.Event()
    handler.outcome = lambda: release.wait(5)
    _queue(loop, range(BATCH))
    loop._dispatch()
    running = loop._partitions[(TOPIC, 0)].inflight

    loop._on_lost(consumer, [TopicPartition(TOPIC, 0)])  # type: ignore[arg-type]
    release.set()
    running.result(timeout=5)
    loop._reap_finished(waiting=True)

    # Another member may own it already: its offsets are that member's to commit.
    assert (TOPIC, 0) not in loop._partitions
    assert consumer.stored == []


class _ConsumerThatCannotSeek(RecordingConsumer):
    def seek(self, partition) -> None:
        raise KafkaException(KafkaError(KafkaError._STATE))


def test_a_partition_that_cannot_seek_back_stops_instead_of_skipping_the_batch(clock):
    consumer = _ConsumerThatCannotSeek()
    handler = _Handler()
    handler.outcome = _raise(RuntimeError("a bug"))
    loop = _loop_over(consumer, handler, clock)
    try:
        _queue(loop, range(BATCH))
        _run_one_batch(loop)
        handler.outcome = lambda: None
        _queue(loop, range(BATCH, 2 * BATCH))  # fetched on, past the failed batch
        clock[0] += 10 * poll_loop.REPLAY_MAX_DELAY_S
        _run_one_batch(loop)
    finally:
        loop._executor.shutdown(wait=True)

    assert handler.batches == [list(range(BATCH))]
    assert consumer.stored == []


def test_a_loop_with_a_partition_stuck_that_way_ends_so_the_group_moves_the_partition():
    consumer = _ConsumerThatCannotSeek()
    consumer.to_fetch = [Message(0, 0, b"{}")]
    handler = _Handler()
    handler.outcome = _raise(RuntimeError("a bug"))
    loop = _loop_over(consumer, handler)

    with pytest.raises(RuntimeError, match="partition 0 could not seek back to offset 0"):
        loop.run(threading.Event())

    assert handler.batches == [[0]] and consumer.closed


def test_a_partition_stopped_for_shutdown_is_not_resumed_to_fetch_for_nothing(loop):
    loop, consumer, handler = loop
    handler.outcome = _raise(ShutdownRequested())
    _queue(loop, range(PAUSE_AT_BATCHES * BATCH))

    _run_one_batch(loop)

    assert consumer.calls == [("pause", 0), ("seek", 0, 0)]


def test_an_idle_loop_polls_no_longer_than_until_a_held_partition_may_replay(loop, clock):
    loop, _, handler = loop
    handler.outcome = _raise(RuntimeError("a bug"))
    _queue(loop, range(BATCH))
    _run_one_batch(loop)  # held for REPLAY_BASE_DELAY_S
    assert loop._idle_poll_timeout_s() == 0.1  # nothing refetched yet: the usual wait

    _queue(loop, range(BATCH))
    clock[0] += poll_loop.REPLAY_BASE_DELAY_S - 0.04

    assert loop._idle_poll_timeout_s() == pytest.approx(0.04)


def test_a_stuck_loop_ends_without_waiting_for_other_partitions_batches():
    consumer = _ConsumerThatCannotSeek()
    consumer.to_fetch = [Message(1, 0, b"{}"), Message(0, 0, b"{}")]
    release = threading.Event()

    def handle(records: list[ConsumedRecord]) -> None:
        if records[0].partition == 0:
            raise RuntimeError("a bug")
        release.wait(10)  # partition 1: a batch waiting out a retry schedule, say

    loop = _loop_over(consumer, handle, poll_timeout_s=0.05)
    ended = threading.Event()

    def run() -> None:
        with pytest.raises(RuntimeError, match="could not seek back"):
            loop.run(threading.Event())
        ended.set()

    runner = threading.Thread(target=run)
    runner.start()
    try:
        assert ended.wait(5), "the stuck loop waited for partition 1's batch"
        assert consumer.closed and consumer.stored == []
    finally:
        release.set()
        runner.join(10)


def test_a_batch_failing_while_its_partition_is_revoked_is_left_to_the_next_owner():
    consumer = _ConsumerThatCannotSeek()  # a partition on its way out may refuse a seek
    handler = _Handler()
    handler.outcome = _raise(RuntimeError("a bug"))
    loop = _loop_over(consumer, handler)
    try:
        _queue(loop, range(BATCH))
        loop._dispatch()

        loop._on_revoke(consumer, [TopicPartition(TOPIC, 0)])  # type: ignore[arg-type]
    finally:
        loop._executor.shutdown(wait=True)

    # Nothing stored: the next owner starts at the failed batch. No replay was tried,
    # so the loop goes on with its other partitions.
    assert consumer.stored == [] and loop._stuck is None
    assert (TOPIC, 0) not in loop._partitions


def test_a_partition_sought_back_reports_its_lag_from_the_replayed_batch(loop, monkeypatch):
    loop, consumer, handler = loop
    reported = []
    monkeypatch.setattr(
        poll_loop.metrics, "set_consumer_lag", lambda t, p, lag: reported.append((p, lag))
    )
    handler.outcome = _raise(RuntimeError("a bug"))
    _queue(loop, range(10, 10 + BATCH))
    _run_one_batch(loop)  # sought back to 10, nothing refetched yet
    consumer.high_watermark = 50
    consumer.positions = [TopicPartition(TOPIC, 0, -1001)]  # OFFSET_INVALID after a seek

    loop._report_lag()

    assert reported == [(0, 40)]


class _ConsumerWithoutWatermarks(RecordingConsumer):
    def get_watermark_offsets(
        self, partition, timeout: float | None = None, cached: bool = False
    ) -> tuple[int, int]:
        if partition.partition == 0:
            raise KafkaException(KafkaError(KafkaError._UNKNOWN_PARTITION))
        return 0, 50


def test_a_partition_whose_watermarks_cannot_be_read_skips_its_lag_and_the_loop_goes_on(
    monkeypatch,
):
    consumer = _ConsumerWithoutWatermarks()
    loop = _loop_over(consumer, _Handler())
    reported = []
    monkeypatch.setattr(
        poll_loop.metrics, "set_consumer_lag", lambda t, p, lag: reported.append((p, lag))
    )
    consumer.positions = [TopicPartition(TOPIC, 0, 5), TopicPartition(TOPIC, 1, 20)]
    try:
        loop._report_lag()
    finally:
        loop._executor.shutdown(wait=True)

    assert reported == [(1, 30)]
