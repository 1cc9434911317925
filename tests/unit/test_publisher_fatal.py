"""The publisher replaces a producer that hit a fatal error, which would refuse every
later record, and keeps one whose errors were only a record's own."""

from __future__ import annotations

import threading
import time
from typing import ClassVar

import pytest
from confluent_kafka import KafkaError

from shared.errors import PartlyAcknowledged
from shared.kafka import publisher as publisher_module
from shared.kafka.publisher import KafkaPublisher
from shared.kafka.record import OutgoingRecord
from tests.waiting import wait_until

RECORD = OutgoingRecord("moderation", b"1", b'{"task_id":1,"item_id":1}')


class _Producer:
    """Reports each record with the error `fails_with` holds for this instance, if any."""

    made: ClassVar[list[_Producer]] = []
    fails_with: ClassVar[dict[int, KafkaError]] = {}

    def __init__(self, config: dict) -> None:
        self.number = len(self.made)
        self.made.append(self)

    def produce(self, topic, *, value, key, headers, on_delivery) -> None:
        on_delivery(self.fails_with.get(self.number), None)

    def poll(self, timeout: float) -> int:
        time.sleep(timeout)
        return 0

    def flush(self, timeout: float) -> int:
        return 0


@pytest.fixture
def publisher():
    _Producer.made, _Producer.fails_with = [], {}
    publisher = KafkaPublisher({}, timeout_s=1.0, queue_full_wait_s=0.5, make_producer=_Producer)
    yield publisher
    publisher.close()


def test_a_fatal_error_makes_the_next_publish_use_a_new_producer(publisher):
    # As the client reports a record after a fatal error: code _FATAL, fatal() False.
    _Producer.fails_with = {0: KafkaError(KafkaError._FATAL, "out of order sequence")}
    assert not _Producer.fails_with[0].fatal()

    with pytest.raises(PartlyAcknowledged, match="out of order sequence"):
        publisher.publish([RECORD])
    publisher.publish([RECORD])

    assert len(_Producer.made) == 2


def test_an_error_of_a_record_alone_keeps_the_producer(publisher):
    _Producer.fails_with = {0: KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)}

    with pytest.raises(PartlyAcknowledged):
        publisher.publish([RECORD])
    with pytest.raises(PartlyAcknowledged):
        publisher.publish([RECORD])

    assert len(_Producer.made) == 1


class _ProducerReportingWhenTold(_Producer):
    """Holds each record's report until `report_next` sends the oldest one."""

    def __init__(self, config: dict) -> None:
        super().__init__(config)
        self.held: list = []

    def produce(self, topic, *, value, key, headers, on_delivery) -> None:
        self.held.append(on_delivery)

    def report_next(self) -> None:
        self.held.pop(0)(self.fails_with.get(self.number), None)


def test_a_fatal_error_reported_late_leaves_the_replacement_producer_in_place():
    # Two publishes in flight on a producer that hits a fatal error: the second to learn
    # of it must not throw away the new producer the first one's replacement made.
    _Producer.made = []
    _Producer.fails_with = {0: KafkaError(KafkaError._FATAL, "out of order sequence")}
    publisher = KafkaPublisher(
        {}, timeout_s=1.0, queue_full_wait_s=0.5, make_producer=_ProducerReportingWhenTold
    )
    failed: list[Exception] = []

    def publish_in_flight() -> None:
        try:
            publisher.publish([RECORD])
        except PartlyAcknowledged as error:
            failed.append(error)

    threads = [threading.Thread(target=publish_in_flight) for _ in range(2)]
    try:
        for thread in threads:
            thread.start()
        wait_until(lambda: len(_Producer.made[0].held) == 2, timeout_s=5, what="both in flight")
        _Producer.made[0].report_next()
        wait_until(lambda: len(failed) == 1, timeout_s=5, what="the first publish failed")
        replacement = publisher._get_producer()  # made by the next publish
        _Producer.made[0].report_next()
        wait_until(lambda: len(failed) == 2, timeout_s=5, what="the second publish failed")
        current = publisher._get_producer()
    finally:
        for thread in threads:
            thread.join(5)
        publisher.close()
        _Producer.fails_with = {}  # a later test's first producer must not fail

    assert current is replacement
    assert len(_Producer.made) == 2


class _ProducerWithAFullQueue(_Producer):
    def produce(self, topic, *, value, key, headers, on_delivery) -> None:
        raise BufferError("Local: Queue full")


def test_a_queue_that_stays_full_fails_the_publish_within_its_deadline():
    publisher = KafkaPublisher(
        {}, timeout_s=0.2, queue_full_wait_s=0.1, make_producer=_ProducerWithAFullQueue
    )
    started = time.monotonic()
    try:
        with pytest.raises(PartlyAcknowledged, match="queue full"):
            publisher.publish([RECORD, RECORD])
    finally:
        publisher.close()

    # Before, a full queue was retried for as long as it stayed full; now for the queue's
    # own wait, then the usual wait for deliveries: what Settings.publish_wait_s counts.
    elapsed = time.monotonic() - started
    assert 0.1 <= elapsed < 0.1 + 0.2 + publisher_module.DELIVERY_REPORT_GRACE_S + 0.2


class _ProducerWhoseFirstPollRaises(_Producer):
    polls = 0

    def poll(self, timeout: float) -> int:
        type(self).polls += 1
        if type(self).polls == 1:
            raise RuntimeError("a delivery callback raised")
        return super().poll(timeout)


def test_the_delivery_report_thread_goes_on_after_a_callback_raises():
    _ProducerWhoseFirstPollRaises.polls = 0
    publisher = KafkaPublisher(
        {}, timeout_s=0.2, queue_full_wait_s=0.1, make_producer=_ProducerWhoseFirstPollRaises
    )
    try:
        publisher.publish([RECORD])  # starts the thread that serves the reports

        # It polls on after the first poll raised: every later publish is still served.
        wait_until(
            lambda: _ProducerWhoseFirstPollRaises.polls >= 3,
            timeout_s=5,
            what="the delivery report thread to poll again after a callback raised",
        )
    finally:
        publisher.close()
