"""Stand-ins for confluent-kafka's Message and Consumer, for tests of the poll loop's logic."""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException, TopicPartition

TOPIC = "moderation"


class Message:
    def __init__(self, partition: int, offset: int, value: bytes) -> None:
        self._partition, self._offset, self._value = partition, offset, value

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return TOPIC

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return self._value

    def headers(self) -> None:
        return None


class EndOfPartition(Message):
    """The event librdkafka sends at the end of a partition: an error, not a record."""

    def error(self) -> KafkaError:
        return KafkaError(KafkaError._PARTITION_EOF)


class BrokerDown(Message):
    """A client-wide error event: no topic, partition -1."""

    def __init__(self) -> None:
        super().__init__(-1, -1, b"")

    def error(self) -> KafkaError:
        return KafkaError(KafkaError._TRANSPORT)

    def topic(self) -> None:
        return None


PARTITIONS = range(4)  # what the fake group assigns


class RecordingConsumer:
    """What the poll loop's own logic touches, recording pause, resume, seek and
    offset storage; `poll` hands out what `to_fetch` holds, one message at a time."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.stored: list[tuple[int, int]] = []  # (partition, next offset), apart from calls
        self.to_fetch: list[Message] = []
        self.closed = False
        # Each commit: whether it was asynchronous, and what was stored by then.
        self.commits: list[tuple[bool, list[tuple[int, int]]]] = []
        self.commit_error: KafkaError | None = None  # what `commit` raises, if anything
        self.positions: list[TopicPartition] = []  # what `position` reports
        self.high_watermark = -1  # the broker's
        # What librdkafka last fetched, which a paused partition no longer moves on;
        # None: the same as the broker's.
        self.cached_high_watermark: int | None = None

    def subscribe(self, topics, **callbacks) -> None:
        # As a group's first rebalance would, before any record is fetched.
        on_assign = callbacks.get("on_assign")
        if on_assign is not None:
            on_assign(self, [TopicPartition(topic, p) for topic in topics for p in PARTITIONS])

    def commit(self, asynchronous: bool = True) -> None:
        self.commits.append((asynchronous, list(self.stored)))
        if self.commit_error is not None:
            raise KafkaException(self.commit_error)

    def close(self) -> None:
        self.closed = True

    def assignment(self) -> list:
        return [TopicPartition(p.topic, p.partition) for p in self.positions]

    def position(self, partitions) -> list[TopicPartition]:
        return list(self.positions)

    def get_watermark_offsets(
        self, partition, timeout: float | None = None, cached: bool = False
    ) -> tuple[int, int]:
        if cached and self.cached_high_watermark is not None:
            return 0, self.cached_high_watermark
        return 0, self.high_watermark

    def pause(self, partitions) -> None:
        self.calls += [("pause", p.partition) for p in partitions]

    def resume(self, partitions) -> None:
        self.calls += [("resume", p.partition) for p in partitions]

    def store_offsets(self, offsets) -> None:
        self.stored += [(o.partition, o.offset) for o in offsets]

    def seek(self, partition) -> None:
        self.calls.append(("seek", partition.partition, partition.offset))

    def poll(self, timeout: float) -> Message | None:
        self.calls.append(("poll", timeout))
        return self.to_fetch.pop(0) if self.to_fetch else None

    def consume(self, num_messages: int, timeout: float) -> list:
        return []


def assign_partitions(loop, consumer: RecordingConsumer) -> None:
    """Give `loop` the fake group's partitions, as `subscribe` does for a running loop,
    and forget the resumes that come with an assignment."""
    loop._on_assign(consumer, [TopicPartition(TOPIC, p) for p in PARTITIONS])
    consumer.calls.clear()
