"""A consumed Kafka record as plain data, so the consumer handler does not depend on
confluent-kafka's Message type (the CloudEvent entry point and tests build these)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, NamedTuple

log = logging.getLogger(__name__)


class ConsumedRecord(NamedTuple):
    # A NamedTuple, not a dataclass: the poll loop builds one per record, and a
    # tuple is several times cheaper to make.
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()

    @classmethod
    def from_message(cls, message: Any) -> ConsumedRecord:
        """Copy a confluent_kafka.Message."""
        try:
            raw_headers = message.headers()
        except (SystemError, UnicodeDecodeError):
            # A header name that is not UTF-8 (any client but Java's can write one) makes
            # confluent-kafka raise SystemError, here, outside the handler's per-record
            # checks: the whole batch would fail and be replayed for good, stalling its
            # partition. No handler reads headers, so the record goes on without them;
            # calling headers() again is no way out (it returns a NULL item).
            log.warning(
                "a record's headers cannot be decoded; it is handled without them",
                extra={
                    "topic": message.topic(),
                    "partition": message.partition(),
                    "offset": message.offset(),
                },
            )
            raw_headers = None
        headers = tuple((name, value or b"") for name, value in raw_headers) if raw_headers else ()
        # Positional, in field order: keywords made this copy nearly twice as slow.
        return cls(
            message.topic(),
            message.partition(),
            message.offset(),
            message.key(),
            message.value(),
            headers,
        )


@dataclass(frozen=True, slots=True)
class OutgoingRecord:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = field(default=())
