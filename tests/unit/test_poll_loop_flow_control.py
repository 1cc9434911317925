"""The poll loop's flow control: a partition's fetching pauses on a long backlog and
resumes at half of it, counted in records and in bytes; and how the loop waits while
batches run."""

from __future__ import annotations

import threading

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from shared.kafka import poll_loop
from shared.kafka.lag import LAG_QUERY_BACKOFF_S
from shared.kafka.poll_loop import PAUSE_AT_BATCHES, PartitionedPollLoop
from tests.unit.fake_kafka import (
    TOPIC,
    BrokerDown,
    EndOfPartition,
    Message,
    RecordingConsumer,
    assign_partitions,
)

BATCH = 10


@pytest.fixture
def loop():
    release = threading.Event()
    consumer = RecordingConsumer()
    # The handler blocks until released, so each partition has one batch in flight.
    loop = PartitionedPollLoop(
        consumer,  # type: ignore[arg-type]
        TOPIC,
        lambda records: release.wait(5),
        batch_size=BATCH,
        poll_timeout_s=0.1,
        max_workers=4,
    )
    assign_partitions(loop, consumer)
    yield loop, consumer, release
    release.set()
    loop._executor.shutdown(wait=True)


def _drain_one_batch(loop: PartitionedPollLoop, release: threading.Event) -> None:
    release.set()
    loop._reap_finished(waiting=True)
    release.clear()
    loop._dispatch()


def test_a_partition_pauses_at_its_limit_and_resumes_at_half_with_work_still_queued(loop):
    loop, consumer, release = loop
    limit = PAUSE_AT_BATCHES * BATCH
    for offset in range(limit - 1):
        loop._accept([Message(0, offset, b"{}")])
    assert consumer.calls == []

    loop._accept([Message(0, limit - 1, b"{}")])
    assert consumer.calls == [("pause", 0)]

    loop._dispatch()  # one batch in flight, limit - BATCH queued: still paused
    while len(loop._partitions[(TOPIC, 0)].backlog) >= limit / 2:
        assert consumer.calls == [("pause", 0)]
        _drain_one_batch(loop, release)

    assert consumer.calls == [("pause", 0), ("resume", 0)]
    assert len(loop._partitions[(TOPIC, 0)].backlog) > 0


def test_a_paused_partitions_lag_follows_the_brokers_watermark_not_the_last_fetch(
    loop, monkeypatch
):
    loop, consumer, _ = loop
    reported = []
    monkeypatch.setattr(
        poll_loop.metrics, "set_consumer_lag", lambda t, p, lag: reported.append((p, lag))
    )
    limit = PAUSE_AT_BATCHES * BATCH
    loop._accept([Message(0, offset, b"{}") for offset in range(limit)])  # paused
    loop._accept([Message(1, 0, b"{}")])  # not paused
    consumer.positions = [TopicPartition(TOPIC, 0, limit), TopicPartition(TOPIC, 1, 1)]
    # Producers went on by 1,000 records on each; only a fetch would tell the cache.
    consumer.cached_high_watermark = limit
    consumer.high_watermark = limit + 1_000

    loop._report_lag()

    # Partition 0: the broker's 1,000 new records plus its backlog. Partition 1, which
    # fetches, keeps the cheap cached watermark: up to it from position 1, plus its record.
    assert reported == [(0, 1_000 + limit), (1, (limit - 1) + 1)]


def test_a_running_batchs_records_count_in_the_lag_until_it_is_done(loop, monkeypatch):
    # Fetched is not handled: a batch in flight, first and last offsets included, is
    # still lag, or a stuck handler would read as a consumer that has caught up.
    loop, consumer, _ = loop
    reported = []
    monkeypatch.setattr(
        poll_loop.metrics, "set_consumer_lag", lambda t, p, lag: reported.append((p, lag))
    )
    loop._accept([Message(0, offset, b"{}") for offset in range(BATCH + 3)])
    loop._dispatch()  # offsets 0-9 in flight (the handler holds them), 10-12 waiting
    consumer.positions = [TopicPartition(TOPIC, 0, BATCH + 3)]
    consumer.high_watermark = BATCH + 3  # all fetched: the loop holds every one of them

    loop._report_lag()

    assert reported == [(0, BATCH + 3)]


class _UnansweringBroker(RecordingConsumer):
    """The broker does not answer a watermark query in time: confluent-kafka raises."""

    def __init__(self) -> None:
        super().__init__()
        self.queries: list[tuple[int, bool]] = []  # (partition, cached)

    def get_watermark_offsets(self, partition, timeout=None, cached=False):
        self.queries.append((partition.partition, cached))
        if not cached:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT))
        return super().get_watermark_offsets(partition, timeout, cached)


def test_a_broker_that_does_not_answer_costs_one_lag_query_wait_then_none_for_a_while(
    monkeypatch,
):
    consumer = _UnansweringBroker()
    now = [1000.0]
    loop = PartitionedPollLoop(
        consumer,  # type: ignore[arg-type]
        TOPIC,
        lambda records: None,
        batch_size=BATCH,
        poll_timeout_s=0.1,
        max_workers=4,
        clock=lambda: now[0],
    )
    assign_partitions(loop, consumer)
    monkeypatch.setattr(poll_loop.metrics, "set_consumer_lag", lambda t, p, lag: None)
    try:
        limit = PAUSE_AT_BATCHES * BATCH
        for partition in (0, 1, 2):  # all three paused
            loop._accept([Message(partition, offset, b"{}") for offset in range(limit)])
        assert all(loop._partitions[(TOPIC, p)].paused for p in (0, 1, 2))
        consumer.positions = [TopicPartition(TOPIC, p, limit) for p in (0, 1, 2)]
        consumer.high_watermark = limit

        loop._report_lag()
        first_report = list(consumer.queries)
        consumer.queries.clear()
        start = now[0]
        for seconds in (1, 2, LAG_QUERY_BACKOFF_S + 1):
            now[0] = start + seconds
            loop._report_lag()
    finally:
        loop._executor.shutdown(wait=True)

    # The first paused partition asks the broker and waits in vain; the others keep to
    # the cache rather than wait in turn, and so do the reports of the next seconds,
    # until the back-off is over.
    assert first_report == [(0, False), (1, True), (2, True)]
    assert consumer.queries == [(0, True), (1, True), (2, True)] * 2 + [
        (0, False),
        (1, True),
        (2, True),
    ]


def test_a_fetch_mixing_partitions_and_events_queues_each_record_in_order(loop):
    loop, consumer, _ = loop
    fetched = [
        Message(0, 0, b"a"),
        Message(0, 1, b"bb"),
        Message(1, 0, b"ccc"),
        EndOfPartition(1, 1, b""),
        Message(0, 2, b"dddd"),
    ]

    loop._accept(fetched)

    zero, one = loop._partitions[(TOPIC, 0)], loop._partitions[(TOPIC, 1)]
    # Values and keys (the fake's key is one byte).
    assert [m.offset() for m in zero.backlog] == [0, 1, 2] and zero.backlog_bytes == 7 + 3
    assert [m.offset() for m in one.backlog] == [0] and one.backlog_bytes == 3 + 1
    assert consumer.calls == []


def test_one_fetch_running_past_the_limit_pauses_its_partition_once(loop):
    loop, consumer, _ = loop
    limit = PAUSE_AT_BATCHES * BATCH

    loop._accept([Message(0, offset, b"{}") for offset in range(limit + BATCH)])

    assert consumer.calls == [("pause", 0)]
    assert len(loop._partitions[(TOPIC, 0)].backlog) == limit + BATCH


def test_an_error_event_is_logged_and_dropped_between_records(loop, caplog):
    loop, _, _ = loop

    loop._accept([Message(0, 0, b"a"), BrokerDown(), Message(0, 1, b"b")])

    assert [m.offset() for m in loop._partitions[(TOPIC, 0)].backlog] == [0, 1]
    assert (None, -1) not in loop._partitions
    assert [r.getMessage() for r in caplog.records] == ["consumer error"]


def test_large_records_pause_by_bytes_long_before_the_record_limit(loop, monkeypatch):
    loop, consumer, _ = loop
    monkeypatch.setattr(poll_loop, "PAUSE_AT_BYTES", 1000)

    for offset in range(3):
        loop._accept([Message(1, offset, b"x" * 400)])

    assert consumer.calls == [("pause", 1)]
    assert loop._partitions[(TOPIC, 1)].backlog_bytes == 1200 + 3


def test_large_keys_count_towards_the_byte_limit_as_values_do(loop, monkeypatch):
    loop, consumer, _ = loop
    monkeypatch.setattr(poll_loop, "PAUSE_AT_BYTES", 1000)

    class LargeKey(Message):
        def key(self) -> bytes:
            return b"k" * 400

    for offset in range(3):
        loop._accept([LargeKey(1, offset, b"")])

    assert consumer.calls == [("pause", 1)]


def test_a_partition_paused_by_bytes_resumes_each_time_its_backlog_is_handed_out(loop, monkeypatch):
    # The bytes of the records a batch takes leave the count: counted only up, they would
    # keep the partition paused for good, with no backlog left whose dispatch resumes it.
    loop, consumer, release = loop
    monkeypatch.setattr(poll_loop, "PAUSE_AT_BYTES", 1000)
    rounds, per_round = 6, 3  # 1,200 bytes a round, 7,200 in all
    fetching = True
    for turn in range(rounds):
        if fetching:  # librdkafka fetches nothing for a paused partition
            first = turn * per_round
            loop._accept(
                [Message(1, offset, b"x" * 400) for offset in range(first, first + per_round)]
            )
        loop._dispatch()
        _drain_one_batch(loop, release)
        fetching = not loop._partitions[(TOPIC, 1)].paused

    assert consumer.calls == [("pause", 1), ("resume", 1)] * rounds
    assert consumer.stored[-1] == (1, rounds * per_round)


def test_while_a_batch_runs_the_loop_waits_on_it_instead_of_blocking_in_poll(loop, monkeypatch):
    loop, consumer, release = loop
    waits = []
    monkeypatch.setattr(
        poll_loop, "wait", lambda futures, timeout, return_when: waits.append((futures, timeout))
    )
    loop._accept([Message(0, 0, b"{}")])
    loop._dispatch()
    inflight = loop._partitions[(TOPIC, 0)].inflight

    assert loop._next_messages() == []

    # A poll that returns at once, then a wait that a finishing batch ends.
    assert consumer.calls == [("poll", 0)]
    assert waits == [([inflight], poll_loop.BUSY_WAIT_S)]

    release.set()
    loop._reap_finished(waiting=True)
    consumer.calls.clear()
    assert loop._next_messages() == []
    # Nothing running: the bounded poll of an idle loop, and no wait.
    assert consumer.calls == [("poll", 0.1)] and len(waits) == 1


def test_a_partition_paused_when_revoked_is_resumed_when_assigned_back(loop):
    # librdkafka keeps our pause through a revoke; a partition assigned back paused
    # never fetched again, since only its records resumed it (the fetching itself is
    # tests/integration/test_poll_loop_rebalance.py's).
    loop, consumer, _ = loop
    loop._accept([Message(0, offset, b"{}") for offset in range(PAUSE_AT_BATCHES * BATCH)])
    loop._on_revoke(consumer, [TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)])
    assert (TOPIC, 0) not in loop._partitions

    loop._on_assign(consumer, [TopicPartition(TOPIC, 0)])

    assert consumer.calls == [("pause", 0), ("resume", 0)]


def test_a_partition_paused_when_lost_is_resumed_when_assigned_back(loop):
    loop, consumer, _ = loop
    loop._accept([Message(2, offset, b"{}") for offset in range(PAUSE_AT_BATCHES * BATCH)])
    loop._on_lost(consumer, [TopicPartition(TOPIC, 2)])

    loop._on_assign(consumer, [TopicPartition(TOPIC, 2)])

    assert consumer.calls == [("pause", 2), ("resume", 2)]


def test_every_partition_assigned_is_resumed_whatever_happened_to_it_before(loop):
    loop, consumer, _ = loop

    loop._on_assign(consumer, [TopicPartition(TOPIC, 5), TopicPartition(TOPIC, 6)])

    assert consumer.calls == [("resume", 5), ("resume", 6)]


def test_records_of_a_partition_revoked_during_the_fetch_are_left_to_its_next_owner(loop):
    # poll() can return a record and the consume() after it run the revoke: a batch of
    # that record here could store an offset past what the next owner has not handled.
    loop, consumer, _ = loop
    loop._on_revoke(consumer, [TopicPartition(TOPIC, 0)])

    loop._accept([Message(0, 7, b"{}"), Message(1, 3, b"{}")])

    assert (TOPIC, 0) not in loop._partitions
    assert [m.offset() for m in loop._partitions[(TOPIC, 1)].backlog] == [3]


def test_a_running_loop_reports_the_lag_of_its_assigned_partitions(monkeypatch):
    reported = []
    monkeypatch.setattr(poll_loop.metrics, "set_consumer_lag", lambda t, p, lag: reported.append(p))
    consumer = RecordingConsumer()
    consumer.positions = [TopicPartition(TOPIC, 0, 0)]
    consumer.high_watermark = 3
    stop = threading.Event()
    loop = PartitionedPollLoop(
        consumer,  # type: ignore[arg-type]
        TOPIC,
        lambda records: None,
        batch_size=BATCH,
        poll_timeout_s=0.01,
        max_workers=1,
    )
    # One idle round of the loop, then stop.
    consumer.poll = lambda timeout: stop.set()  # type: ignore[method-assign]

    loop.run(stop)

    assert reported == [0]
