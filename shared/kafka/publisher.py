"""Publishing to Kafka and waiting for the broker's acknowledgement, with a deadline."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence

from confluent_kafka import KafkaError, KafkaException, Producer

from shared.errors import BrokerUnavailable, PartlyAcknowledged
from shared.kafka.record import OutgoingRecord
from shared.settings import DELIVERY_REPORT_GRACE_S

log = logging.getLogger(__name__)


class KafkaPublisher:
    """One idempotent producer per process, created on first publish, and again after a
    fatal error: an idempotent producer that hit one (its sequence numbers out of step
    with the broker's, say) refuses every later record until it is replaced."""

    def __init__(
        self,
        config: dict[str, object],
        *,
        timeout_s: float,
        queue_full_wait_s: float,
        make_producer: Callable[[dict[str, object]], Producer] = Producer,
        topics: Sequence[str] = (),
    ) -> None:
        self._config = config
        self._topics = tuple(topics)  # what `ping` checks the cluster has
        self._make_producer = make_producer
        self._timeout_s = timeout_s
        self._queue_full_wait_s = queue_full_wait_s
        self._producer: Producer | None = None
        self._stop_serving: threading.Event | None = None
        self._lock = threading.Lock()

    def _get_producer(self) -> Producer:
        with self._lock:
            if self._producer is None:
                self._producer = self._make_producer(self._config)
                self._stop_serving = threading.Event()
                threading.Thread(
                    target=_serve_delivery_reports,
                    args=(self._producer, self._stop_serving),
                    name="kafka-delivery-reports",
                    daemon=True,
                ).start()
            return self._producer

    def _replace_after_fatal_error(self, producer: Producer) -> None:
        """Drop `producer` (if it is still the current one); the next publish makes another.

        Its delivery reports are still served for one publish wait, so that a publish in
        flight on it learns each record's fate instead of waiting out its deadline."""
        with self._lock:
            if self._producer is producer and self._stop_serving is not None:
                stop = self._stop_serving
                timer = threading.Timer(self._timeout_s + DELIVERY_REPORT_GRACE_S, stop.set)
                timer.daemon = True
                timer.start()
                self._producer = None

    def publish(self, records: Sequence[OutgoingRecord]) -> None:
        """Publish all records; return once each is acknowledged, or raise
        PartlyAcknowledged (a BrokerUnavailable) saying which were."""
        if not records:
            return
        producer = self._get_producer()
        # A local queue that stays full is waited on briefly: it fills when the broker
        # takes nothing, and the relay holds its rows' locks meanwhile (Settings checks
        # the whole wait against the statement timeout).
        queue_deadline = time.monotonic() + self._queue_full_wait_s
        pending = _PendingDeliveries(len(records))
        for index, record in enumerate(records):
            try:
                self._produce(
                    producer, record, functools.partial(pending.on_delivery, index), queue_deadline
                )
            except KafkaException as error:
                # Refused before it left (over message.max.bytes, or the local queue
                # still full): that record alone is not acknowledged.
                pending.on_delivery(index, error.args[0], None)
        # A little longer than librdkafka's own message timeout, counted from the last
        # record queued, so each record's fate is known (acknowledged or timed out) when
        # this returns.
        done = pending.done.wait(self._timeout_s + DELIVERY_REPORT_GRACE_S)
        if any(_is_fatal(error) for error in pending.errors):
            self._replace_after_fatal_error(producer)
        if not done:
            raise PartlyAcknowledged(
                f"Kafka did not acknowledge {pending.outstanding} of {len(records)} "
                f"record(s) within {self._timeout_s:g} s",
                pending.acknowledged(),
            )
        if pending.errors:
            raise PartlyAcknowledged(
                f"Kafka rejected {len(pending.errors)} of {len(records)} record(s):"
                f" {pending.errors[0]}",
                pending.acknowledged(),
            )

    def _produce(
        self,
        producer: Producer,
        record: OutgoingRecord,
        on_delivery: Callable[..., None],
        deadline: float,
    ) -> None:
        while True:
            try:
                producer.produce(
                    record.topic,
                    value=record.value,
                    key=record.key,
                    headers=list(record.headers) or None,
                    on_delivery=on_delivery,
                )
                return
            except BufferError:
                if time.monotonic() >= deadline:
                    raise KafkaException(
                        KafkaError(KafkaError._QUEUE_FULL, "local producer queue full")
                    ) from None
                # The local queue is full: give deliveries a moment to drain it.
                time.sleep(0.01)

    def ping(self, timeout_s: float = 2.0) -> None:
        """Raise BrokerUnavailable unless the cluster answers a metadata request and has
        every topic this publisher writes to."""
        deadline = time.monotonic() + timeout_s
        producer = self._get_producer()
        try:
            metadata = producer.list_topics(timeout=timeout_s)
        except KafkaException as error:
            raise BrokerUnavailable(f"Kafka unreachable: {error}") from error
        # A publish to a topic that is missing (on a broker that creates none) only times
        # out, "Local: Message timed out", as if the broker were down.
        missing = [
            name
            for name in self._topics
            if name not in metadata.topics and _does_not_exist(producer, name, deadline)
        ]
        if missing:
            raise BrokerUnavailable(
                f"Kafka at {self._config.get('bootstrap.servers')} has no topic "
                f"{', '.join(map(repr, missing))}: create it with python -m shared.kafka.topics"
            )

    def close(self, timeout_s: float = 5.0) -> None:
        with self._lock:
            if self._producer is not None and self._stop_serving is not None:
                self._producer.flush(timeout_s)
                self._stop_serving.set()
                self._producer = None


def _does_not_exist(producer: Producer, topic: str, deadline: float) -> bool:
    """Whether the cluster says `topic` does not exist. A listing leaves out the topics
    an account may not describe (ACLs); asked for by name, the broker tells the two apart.
    (Asked by name, a broker that creates topics on first use creates it: it would on the
    first publish too.)"""
    try:
        metadata = producer.list_topics(topic, timeout=max(deadline - time.monotonic(), 0.1))
    except KafkaException:
        return False  # no answer this time: the cluster answered the listing, so say so
    error = metadata.topics[topic].error if topic in metadata.topics else None
    return error is not None and error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART


def _is_fatal(error: KafkaError) -> bool:
    # After a fatal error librdkafka fails every record with _FATAL; the client builds
    # those errors with fatal() False, so the code is what tells.
    return error.fatal() or error.code() == KafkaError._FATAL


def _serve_delivery_reports(producer: Producer, stop: threading.Event) -> None:
    # One thread serves every delivery callback, so a publishing thread just waits for
    # its own event instead of sleeping in poll() while another thread serves it.
    while not stop.is_set():
        try:
            producer.poll(0.05)
        except Exception:
            # A callback that raised: this thread serves every publish of the process,
            # and ending it would leave each of them waiting out its deadline.
            log.exception("a delivery report callback failed")


class _PendingDeliveries:
    def __init__(self, count: int) -> None:
        self.outstanding = count
        self.errors: list[KafkaError] = []
        self.done = threading.Event()
        self._acknowledged = [False] * count
        self._lock = threading.Lock()

    def on_delivery(self, index: int, error: KafkaError | None, _message: object) -> None:
        with self._lock:
            if error is None:
                self._acknowledged[index] = True
            else:
                self.errors.append(error)
            self.outstanding -= 1
            if self.outstanding == 0:
                self.done.set()

    def acknowledged(self) -> list[bool]:
        with self._lock:
            return list(self._acknowledged)
