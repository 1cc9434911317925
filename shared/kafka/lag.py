"""The consumer's lag per partition, for the `moderation_consumer_lag_records` gauge:
records not yet handled, read from the consumer's positions and the partitions'
watermarks, and what the poll loop holds."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sized
from typing import Protocol

from confluent_kafka import Consumer, KafkaException

from shared import metrics

log = logging.getLogger(__name__)

# Lag is read from cached watermarks (no broker round trip), but for a paused partition's
# (see `LagReporter.report`); once a second is plenty.
LAG_REPORT_INTERVAL_S = 1.0
LAG_QUERY_TIMEOUT_S = 0.5  # a paused partition's watermark, asked of the broker
LAG_QUERY_BACKOFF_S = 30.0  # the cache only, after the broker left such a query unanswered

PartitionKey = tuple[str, int]


class PartitionProgress(Protocol):
    """What the poll loop knows of a partition that the broker does not."""

    backlog: Sized  # fetched records not yet handed to a batch
    paused: bool
    sought_to: int  # where the last replay went back to
    inflight: object | None  # the running batch, if any
    inflight_first: int
    inflight_last: int


class LagReporter:
    def __init__(self, consumer: Consumer, clock: Callable[[], float]) -> None:
        self._consumer = consumer
        self._clock = clock
        self._next_report = 0.0
        self._fresh_after = 0.0  # when a paused partition's lag may ask the broker again

    def report(self, partitions: Mapping[PartitionKey, PartitionProgress]) -> None:
        """Per assigned partition, at most once an interval: records not yet handled
        (high watermark minus what is fetched, plus what waits in the backlog or is in
        flight)."""
        now = self._clock()
        if now < self._next_report:
            return
        self._next_report = now + LAG_REPORT_INTERVAL_S
        try:
            positions = self._consumer.position(self._consumer.assignment())
        except KafkaException as error:
            log.debug("could not read positions for lag", extra={"error": str(error)})
            return
        for position in positions:
            partition = partitions.get((position.topic, position.partition))
            # A paused partition fetches nothing, so its cached high watermark stands
            # still while producers go on: asked of the broker instead, in a bounded wait,
            # since a pause is when the backlog, and the gauge, matter. After a query the
            # broker did not answer, the cache serves for a while: a broker down must not
            # cost the poll thread, which dispatches the backlog, a wait every second.
            fresh = partition is not None and partition.paused and now >= self._fresh_after
            try:
                watermarks = self._consumer.get_watermark_offsets(
                    position, timeout=LAG_QUERY_TIMEOUT_S, cached=not fresh
                )
            except KafkaException as error:
                # A partition changing hands, say: a gauge is not worth ending the loop for.
                log.debug("could not read watermarks for lag", extra={"error": str(error)})
                if fresh:
                    self._fresh_after = self._clock() + LAG_QUERY_BACKOFF_S
                continue
            if watermarks is None:  # the documented answer to a timeout (it raises, here)
                continue
            _low, high = watermarks
            fetched_to = position.offset
            if fetched_to < 0 and partition is not None:
                # A seek for a replay leaves the position unknown until the refetch.
                fetched_to = partition.sought_to
            if high < 0 or fetched_to < 0:
                continue  # not fetched yet: nothing known to report
            lag = max(0, high - fetched_to) + _held(partition)
            metrics.set_consumer_lag(position.topic, position.partition, lag)


def _held(partition: PartitionProgress | None) -> int:
    """Records the poll loop holds: fetched and waiting, or in the running batch."""
    if partition is None:
        return 0
    waiting = len(partition.backlog)
    if partition.inflight is not None:
        waiting += partition.inflight_last - partition.inflight_first + 1
    return waiting
