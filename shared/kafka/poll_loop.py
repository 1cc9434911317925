"""The Kafka poll loop that feeds the consumer handler, one worker per partition.

Why per partition: the handler may wait out the retry schedule (5/10/20 s by default) on a
temporary error. Only the partition whose batch is waiting stalls; the others
keep flowing, and order within a partition (one ad's tasks) is kept. The workers
are capped (`max_workers`): the consumer caps them at its connection pool's size,
since a running batch holds a pooled connection.

Delivery is at-least-once. An offset is stored only after the handler returned,
which means the batch's results are committed in PostgreSQL; auto-commit then
commits stored offsets, and a revoke or shutdown commits them synchronously.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from itertools import groupby

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from shared import metrics
from shared.cancellation import ShutdownRequested, batch_let_go
from shared.kafka.config import MAX_POLL_INTERVAL_MS, SESSION_TIMEOUT_MS
from shared.kafka.lag import LagReporter
from shared.kafka.record import ConsumedRecord

log = logging.getLogger(__name__)

# While batches run and nothing is fetched, how long the loop waits for one to finish
# before polling again: the most a record of an idle partition waits to be dispatched.
BUSY_WAIT_S = 0.005

# Flow control per partition: fetching pauses once the backlog holds this many batches
# or bytes, and resumes when it is down to half of both, with work still queued. A
# resume drops librdkafka's prefetch, so the refetch takes a round trip; resuming only
# below one batch left the handler idle meanwhile (bench/bench_consumer_throughput.py:
# 18.7k rows/s before this, 25-31k after it, on the code of the day).
PAUSE_AT_BATCHES = 20
PAUSE_AT_BYTES = 64 * 1024 * 1024

# A batch whose handler raised is replayed from its first record, after a wait that
# doubles with each failure in a row: the handler retries outages itself, so what
# escapes it is a bug, and replaying a bug at once would spin on it.
REPLAY_BASE_DELAY_S = 1.0
REPLAY_MAX_DELAY_S = 60.0
# How long a member may wait for the group's assignment, from its subscribe or from the
# start of a rebalance (a revoke, or its partitions lost), before the loop takes it for
# stuck: past two rounds of the longest rebalance (the group waits up to the rebalance
# timeout, max.poll.interval.ms, for its members, and a member dropped at its end may
# force another round, with no revoke in between) and a session more: 610 s. Seen in a
# test: after a broker restart that outlasted its session, librdkafka 2.16's client never
# sent its JoinGroup again, and the member sat with no partitions, polling, for good. A
# new client rejoins at once, so the loop ends and the process is restarted.
REJOIN_TIMEOUT_S = (2 * MAX_POLL_INTERVAL_MS + SESSION_TIMEOUT_MS) / 1000

# The longest a revoke waits for the batches of its partitions once they are let go. A
# batch let go stops at its next retry wait; until then it goes on with the attempt it
# is in (its read, the model, its writes, publishing its dead letters), which takes
# milliseconds when all is well and, with a slow database or broker, a few seconds. One
# held up longer (its database frozen, or a connection half-open after a failover, which
# no server-side timeout ends) would hold up this member's rebalance, and with the eager
# assignor the whole group's, for as long as it lasts, up to the rebalance timeout
# (300 s): it is left running instead, stored and committed nothing for, like a lost
# partition's batch. Leaving a healthy batch that way costs only a redelivery, whose
# tasks its own writes finish or have finished.
REVOKE_WAIT_S = 5.0

BatchHandler = Callable[[list[ConsumedRecord]], object]
PartitionKey = tuple[str, int]


@dataclass
class _Partition:
    backlog: deque[Message] = field(default_factory=deque)
    backlog_bytes: int = 0
    inflight: Future | None = None
    # Set to end the running batch's retry waits: its partition is being let go.
    inflight_let_go: threading.Event = field(default_factory=threading.Event)
    inflight_first: int = -1
    inflight_last: int = -1
    paused: bool = False
    failures_in_a_row: int = 0
    held_until: float = 0.0  # no dispatch before this time of the loop's clock
    sought_to: int = -1  # where the last replay went back to


class PartitionedPollLoop:
    """Consume `topic`, hand each partition's records to `handle_batch` in order."""

    def __init__(
        self,
        consumer: Consumer,
        topic: str,
        handle_batch: BatchHandler,
        *,
        batch_size: int,
        poll_timeout_s: float,
        max_workers: int,
        clock: Callable[[], float] = time.monotonic,
        rejoin_timeout_s: float = REJOIN_TIMEOUT_S,
        revoke_wait_s: float = REVOKE_WAIT_S,
    ) -> None:
        self._consumer = consumer
        self._clock = clock
        self._rejoin_timeout_s = rejoin_timeout_s
        self._revoke_wait_s = revoke_wait_s
        # Since when this member waits for an assignment (None: it has one, empty or not).
        self._unassigned_since: float | None = None
        self._topic = topic
        self._handle_batch = handle_batch
        self._batch_size = batch_size
        self._poll_timeout_s = poll_timeout_s
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="batch")
        self._partitions: dict[PartitionKey, _Partition] = {}
        # What the group has given this member, from the rebalance callbacks. A record
        # of any other partition was fetched before a revoke ran inside the same poll:
        # its next owner delivers it, and a batch of it here could store an offset past
        # records that owner has not handled.
        self._assigned: set[PartitionKey] = set()
        # Batches of lost partitions, still running: a partition given back dispatches
        # nothing until its old batch is over, so no two batches of it ever run at once.
        self._orphans: dict[PartitionKey, Future] = {}
        # Set when a partition can neither go on nor go back, or the member cannot get
        # back into its group: the loop then ends, the process with it, and the group
        # hands the partitions to a member that can (a restarted one, too).
        self._stuck: str | None = None
        self._lag = LagReporter(consumer, clock)

    def run(self, stop: threading.Event) -> None:
        """Poll until `stop` is set; then finish in-flight batches, commit and close.

        Raises, after the same cleanup, when a partition got stuck (see `_replay_from`),
        or the member waited for an assignment past `rejoin_timeout_s`.
        """
        self._unassigned_since = self._clock()
        self._consumer.subscribe(
            [self._topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        try:
            while not stop.is_set() and self._stuck is None:
                self._check_membership()
                self._reap_finished()
                self._dispatch()
                self._accept(self._next_messages())
                self._dispatch()
                self._report_lag()
        finally:
            if self._stuck is None:
                self._finish_inflight()
            # Stuck, the loop does not wait for running batches (one may be waiting out
            # a retry schedule): their offsets stay unstored, and they are redelivered.
            self._commit()
            self._executor.shutdown(wait=self._stuck is None, cancel_futures=True)
            self._consumer.close()
        if self._stuck is not None:
            raise RuntimeError(f"poll loop stopped: {self._stuck}")

    @property
    def stuck(self) -> str | None:
        """Why the loop is ending for good, as soon as it knows (None while it is not)."""
        return self._stuck

    def _check_membership(self) -> None:
        """End the loop when the member has waited for an assignment past the timeout."""
        if self._unassigned_since is None:
            return
        waited_s = self._clock() - self._unassigned_since
        if waited_s > self._rejoin_timeout_s:
            self._stuck = (
                f"no assignment from the group for {waited_s:.0f} s: the brokers are"
                f" unreachable, the topic {self._topic} is missing or not readable, or this"
                " client stopped rejoining (a new one rejoins)"
            )
            log.error(
                "consumer group not rejoined; the poll loop stops",
                extra={"waited_s": round(waited_s, 1)},
            )

    def _next_messages(self) -> list[Message]:
        inflight = [p.inflight for p in self._partitions.values() if p.inflight is not None]
        if not inflight:
            # Idle: a bounded wait, which keeps Ctrl-C and `stop` responsive, and ends
            # when a held partition may replay.
            return self._poll_batch(self._idle_poll_timeout_s())
        messages = self._poll_batch(0)
        if not messages:
            # Nothing fetched (caught up, or the busy partitions paused): wait for a batch
            # to finish rather than for Kafka, so that its partition's next batch starts at
            # once. Waiting in poll instead left each handler idle ~15 ms between batches.
            wait(inflight, timeout=BUSY_WAIT_S, return_when=FIRST_COMPLETED)
        return messages

    def _idle_poll_timeout_s(self) -> float:
        now = self._clock()
        holds = [
            p.held_until - now
            for p in self._partitions.values()
            if p.backlog and now < p.held_until < math.inf
        ]
        return min([self._poll_timeout_s, *holds])

    def _poll_batch(self, timeout_s: float) -> list[Message]:
        """Wait up to `timeout_s` for one record, then take whatever else is already fetched.

        `consume(n, timeout)` alone would hold a lone record until the timeout ran
        out, adding up to a whole poll timeout to every task's latency.
        """
        first = self._consumer.poll(timeout_s)
        if first is None:
            return []
        return (
            [first, *self._consumer.consume(self._batch_size - 1, 0)]
            if self._batch_size > 1
            else [first]
        )

    def _accept(self, messages: list[Message]) -> None:
        """Queue fetched records on their partitions' backlogs; pause a partition whose
        backlog reached the limit. A fetch holds runs of one partition's records, and
        each run is queued at once: record by record, this was a fifth of the loop's GIL time."""
        for key, run in groupby(messages, _partition_of):
            fetched = list(run)
            records = [message for message in fetched if message.error() is None]
            if len(records) != len(fetched):
                _log_errors(fetched)
            if not records:
                continue
            if key not in self._assigned:
                continue
            partition = self._partitions.get(key)
            if partition is None:
                partition = self._partitions[key] = _Partition()
            partition.backlog.extend(records)
            partition.backlog_bytes += sum(map(_size, records))
            if not partition.paused and self._backlog_over(partition, 1.0):
                self._consumer.pause([TopicPartition(*key)])
                partition.paused = True

    def _backlog_over(self, partition: _Partition, share: float) -> bool:
        """Whether the backlog holds `share` of the pause limit, in records or in bytes."""
        return (
            len(partition.backlog) >= share * PAUSE_AT_BATCHES * self._batch_size
            or partition.backlog_bytes >= share * PAUSE_AT_BYTES
        )

    def _dispatch(self) -> None:
        now = self._clock()
        for key, partition in self._partitions.items():
            if partition.inflight is not None or not partition.backlog:
                continue
            if partition.held_until > now or self._orphan_running(key):
                continue
            count = min(self._batch_size, len(partition.backlog))
            messages = [partition.backlog.popleft() for _ in range(count)]
            partition.backlog_bytes -= sum(map(_size, messages))
            partition.inflight_first = messages[0].offset()
            partition.inflight_last = messages[-1].offset()
            partition.inflight_let_go = threading.Event()
            partition.inflight = self._executor.submit(
                self._handle_messages, messages, partition.inflight_let_go
            )
            if partition.paused and not self._backlog_over(partition, 0.5):
                self._consumer.resume([TopicPartition(*key)])
                partition.paused = False

    def _orphan_running(self, key: PartitionKey) -> bool:
        orphan = self._orphans.get(key)
        return orphan is not None and not orphan.done()

    def _forget_finished_orphans(self) -> None:
        # Whether or not their partitions come back: a finished future holds its batch
        # (through a traceback) for nothing.
        for key in [key for key, orphan in self._orphans.items() if orphan.done()]:
            del self._orphans[key]

    def _handle_messages(self, messages: list[Message], let_go: threading.Event) -> object:
        # Copied on the worker's thread, not the loop's, which has the other partitions to feed.
        records = [ConsumedRecord.from_message(message) for message in messages]
        metrics.observe_batch_size(len(records))
        # The handler's retry waits (Services.sleep) end when the partition is let go.
        token = batch_let_go.set(let_go)
        try:
            return self._handle_batch(records)
        finally:
            batch_let_go.reset(token)

    def _reap_finished(
        self,
        keys: Sequence[PartitionKey] | None = None,
        waiting: bool = False,
        letting_go: bool = False,
    ) -> None:
        """Store the offsets of finished batches; replay the partitions of failed ones.

        `waiting`: each batch still running is waited for, instead of left for later.
        `letting_go`: the partitions are being revoked or the loop is closing, so a
        failed batch is only left unstored, for the next owner to redeliver; there is
        nothing to replay here, and a seek could fail on a partition on its way out.
        """
        self._forget_finished_orphans()
        for key in list(keys if keys is not None else self._partitions):
            partition = self._partitions.get(key)
            if partition is None or partition.inflight is None:
                continue
            if not waiting and not partition.inflight.done():
                continue
            future, partition.inflight = partition.inflight, None
            batch = {
                "partition": key[1],
                "first_offset": partition.inflight_first,
                "last_offset": partition.inflight_last,
            }
            try:
                future.result()
            except ShutdownRequested:
                # Nothing after this batch may be stored, or the commit would skip it:
                # the partition stops here, and its next owner starts from this batch.
                log.info("batch abandoned in a retry wait; it will be redelivered", extra=batch)
                if not letting_go:
                    self._replay_from(key, partition.inflight_first, hold_s=math.inf)
                continue
            except Exception:
                if letting_go:
                    log.exception("batch handler failed; its next owner redelivers it", extra=batch)
                    continue
                partition.failures_in_a_row += 1
                delay = min(
                    REPLAY_MAX_DELAY_S,
                    REPLAY_BASE_DELAY_S * 2 ** (partition.failures_in_a_row - 1),
                )
                log.exception(
                    "batch handler failed; replaying the batch",
                    extra={
                        **batch,
                        "failures_in_a_row": partition.failures_in_a_row,
                        "replay_in_s": delay,
                    },
                )
                # The handler retries outages itself: what reaches here is a bug, which
                # an alert should see while it repeats, not only once the lag has grown.
                metrics.count_batch_replay()
                self._replay_from(key, partition.inflight_first, hold_s=delay)
                continue
            partition.failures_in_a_row = 0
            # The handler returned: the batch is durable in PostgreSQL, so its offsets may go.
            self._store_offset(key, partition.inflight_last + 1)

    def _replay_from(self, key: PartitionKey, offset: int, *, hold_s: float) -> None:
        """Fetch the partition again from `offset`, dispatching nothing for `hold_s`."""
        partition = self._partitions[key]
        partition.backlog.clear()
        partition.backlog_bytes = 0
        partition.held_until = self._clock() + hold_s
        partition.sought_to = offset
        try:
            self._consumer.seek(TopicPartition(key[0], key[1], offset))
        except KafkaException as error:
            # What comes next would follow the batch, and a batch handled after it would
            # store an offset past it: the partition dispatches nothing more, and the
            # loop ends, so that its next owner starts from the batch.
            log.error(
                "could not seek back for replay; the poll loop stops",
                extra={"partition": key[1], "error": str(error)},
            )
            partition.held_until = math.inf
            self._stuck = f"partition {key[1]} could not seek back to offset {offset}: {error}"
            return
        if partition.paused and partition.held_until != math.inf:
            # Its backlog is gone, and only a dispatch from the backlog resumes it.
            self._consumer.resume([TopicPartition(*key)])
            partition.paused = False

    def _store_offset(self, key: PartitionKey, next_offset: int) -> None:
        try:
            self._consumer.store_offsets(offsets=[TopicPartition(key[0], key[1], next_offset)])
        except KafkaException as error:
            # No longer assigned (revoked meanwhile): the new owner redelivers, harmlessly.
            log.info(
                "could not store offset",
                extra={"partition": key[1], "offset": next_offset, "error": str(error)},
            )

    def _report_lag(self) -> None:
        self._lag.report(self._partitions)

    def _finish_inflight(self) -> None:
        self._reap_finished(waiting=True, letting_go=True)

    def _commit(self) -> None:
        try:
            self._consumer.commit(asynchronous=False)
        except KafkaException as error:
            if error.args[0].code() != KafkaError._NO_OFFSET:
                log.warning("offset commit failed", extra={"error": str(error)})

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Called at the end of every rebalance, with an empty list too.
        self._unassigned_since = None
        self._assigned.update((p.topic, p.partition) for p in partitions)
        # librdkafka keeps a pause of ours through a revoke and a later assignment, and
        # only a record of a partition resumes it here: one given back paused would
        # never fetch again. Resuming a partition that is not paused changes nothing.
        self._resume([(p.topic, p.partition) for p in partitions])
        log.info("partitions assigned", extra={"partitions": [p.partition for p in partitions]})

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._unassigned_since = self._clock()  # a rebalance began
        keys = [(p.topic, p.partition) for p in partitions]
        self._assigned.difference_update(keys)
        # A batch waiting out the retry schedule (35 s by default, and longer while the database is
        # down) would hold up this member's whole rebalance, and the group's with it:
        # its waits end now, it stays unstored, and the new owner redelivers it.
        self._let_inflight_go(keys)
        self._orphan_batches_still_running(keys, after_s=self._revoke_wait_s)
        # Finish what is running on the revoked partitions and commit it, so the new
        # owner starts after it instead of redoing it.
        self._reap_finished(keys, waiting=True, letting_go=True)
        self._commit()
        self._let_go(keys)
        log.info("partitions revoked", extra={"partitions": [p.partition for p in partitions]})

    def _orphan_batches_still_running(self, keys: list[PartitionKey], *, after_s: float) -> None:
        """Cancel the batches of `keys` still queued for a worker; wait up to `after_s` for
        the others, and leave any still running then as a lost partition's are left
        (REVOKE_WAIT_S): nothing is stored for it, its next owner redelivers it, and this
        member dispatches nothing more of its partition, should it come back, until it is
        over. A write of its that lands late finds its tasks finished, or finishes them as
        the redelivery would have."""
        running = {
            key: partition.inflight
            for key in keys
            if (partition := self._partitions.get(key)) is not None
            and partition.inflight is not None
        }
        for key, future in list(running.items()):
            if future.cancel():
                # Queued behind others for a worker, never started: it never will, and
                # its next owner handles its records.
                self._partitions[key].inflight = None
                del running[key]
        if not running:
            return
        wait(running.values(), timeout=after_s)
        for key, future in running.items():
            if future.done():
                continue
            partition = self._partitions[key]
            log.warning(
                "batch still running at revoke; left uncommitted for the next owner",
                extra={
                    "partition": key[1],
                    "first_offset": partition.inflight_first,
                    "last_offset": partition.inflight_last,
                    "waited_s": after_s,
                },
            )
            self._orphans[key] = future
            partition.inflight = None

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Lost, not revoked: another member may own them already, so commit nothing.
        self._unassigned_since = self._clock()  # out of the group, until it rejoins
        keys = [(p.topic, p.partition) for p in partitions]
        self._assigned.difference_update(keys)
        self._let_inflight_go(keys)
        for key in keys:
            partition = self._partitions.get(key)
            # One still queued for a worker never starts: the next owner has its records.
            inflight = None if partition is None else partition.inflight
            if inflight is not None and not inflight.cancel():
                self._orphans[key] = inflight
        self._let_go(keys)
        log.warning("partitions lost", extra={"partitions": [p.partition for p in partitions]})

    def _let_inflight_go(self, keys: list[PartitionKey]) -> None:
        for key in keys:
            partition = self._partitions.get(key)
            if partition is not None and partition.inflight is not None:
                partition.inflight_let_go.set()

    def _let_go(self, keys: list[PartitionKey]) -> None:
        """Forget the partitions. A pause of theirs stays with librdkafka, and `_on_assign`
        lifts it if one comes back."""
        for key in keys:
            self._partitions.pop(key, None)
            metrics.forget_partition(*key)

    def _resume(self, keys: list[PartitionKey]) -> None:
        if not keys:
            return
        try:
            self._consumer.resume([TopicPartition(*key) for key in keys])
        except KafkaException as error:
            log.warning("could not resume partitions", extra={"error": str(error)})


def _partition_of(message: Message) -> PartitionKey:
    return message.topic(), message.partition()


def _log_errors(messages: list[Message]) -> None:
    for message in messages:
        error = message.error()
        if error is not None and error.code() != KafkaError._PARTITION_EOF:
            # EOF is a signal, not an error.
            log.error("consumer error", extra={"error": str(error)})


def _size(message: Message) -> int:
    # The key counts as the value does: a record may hold up to the topic's 1 MiB in
    # either, and a backlog of large keys counted as empty would never pause.
    key, value = message.key(), message.value()
    return (len(key) if key else 0) + (len(value) if value else 0)
