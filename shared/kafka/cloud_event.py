"""A Kafka record pushed over HTTP as a CloudEvent (the Knative KafkaSource binding).

KafkaSource puts the record value in the body (binary mode), the key in the `key`
extension, `partition:<P>#<O>` in `subject`, `.../<source>#<topic>` in `source`, and
each Kafka header in an extension `kafkaheader<name>`.

The event is read from the raw request, not by functions-framework's CloudEvent
signature: that one decodes a JSON body before our code runs, so a value nested too
deeply never reached the dead-letter queue (the request failed, and the platform
redelivered it for good), and any other JSON value reached it re-encoded. Here the
value stays the body's bytes; only a structured-mode event, whose data is a JSON value
inside the envelope, carries it as that value's JSON text.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping

from cloudevents.exceptions import GenericException
from cloudevents.http import CloudEvent, from_http

from shared.kafka.names import TOPIC_NAME_PATTERN
from shared.kafka.record import ConsumedRecord

# A partition is an int32 and an offset an int64. A subject beyond those did not come
# from Kafka (and would overflow the dead-letter outbox's columns): it counts as none.
_SUBJECT = re.compile(r"^partition:([0-9]{1,10})#([0-9]{1,19})$")
_MAX_PARTITION = 2**31 - 1
_MAX_OFFSET = 2**63 - 1
_TOPIC_NAME = re.compile(TOPIC_NAME_PATTERN)
_HEADER_PREFIX = "kafkaheader"
_MAX_REASON_CHARS = 300  # the SDK's messages quote the body, which may be megabytes


class InvalidCloudEvent(ValueError):
    """The request is not a CloudEvent: there is no record to deliver or dead-letter."""


def record_from_http(
    headers: Mapping[str, str], body: bytes, *, default_topic: str
) -> ConsumedRecord:
    try:
        event = from_http(dict(headers), body, data_unmarshaller=_unchanged)
    except (GenericException, ValueError, TypeError, RecursionError) as error:
        # The SDK parses a structured-mode envelope with json.loads, whose errors
        # (nesting, bad UTF-8, a huge number, an unhashable value) are not its own.
        reason = f"{type(error).__name__}: {error}"
        raise InvalidCloudEvent(f"Not a CloudEvent: {reason[:_MAX_REASON_CHARS]}") from None
    return _record_of(event, default_topic=default_topic)


def _record_of(event: CloudEvent, *, default_topic: str) -> ConsumedRecord:
    attributes = event.get_attributes()
    position = _kafka_position(str(attributes.get("subject", "")))
    if position is not None:
        partition, offset = position
    else:
        # No Kafka position: derive a stable negative one from the event id, so a
        # redelivered event still dedupes in the dead-letter outbox.
        partition, offset = -1, -1 - _stable_number(str(attributes.get("id", "")))
    topic = _topic_of(str(attributes.get("source", ""))) or default_topic
    key = attributes.get("key")
    return ConsumedRecord(
        topic=topic,
        partition=partition,
        offset=offset,
        key=_key_bytes(key),
        value=_as_bytes(event.get_data()),
        headers=tuple(
            (name[len(_HEADER_PREFIX) :], _attribute_bytes(value))
            for name, value in sorted(attributes.items())
            if name.startswith(_HEADER_PREFIX)
            and len(name) > len(_HEADER_PREFIX)
            and _is_utf8(name)
        ),
    )


def _is_utf8(name: str) -> bool:
    """Whether a header's name has a UTF-8 form: a structured event's JSON may name one
    with a lone surrogate, which no producer could send on, nor the outbox keep, so that
    its dead letter could never be written and the platform would redeliver it for good.
    Such a header is left out, as the poll loop leaves out the headers it cannot decode."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _attribute_bytes(value: object) -> bytes:
    """An extension attribute as bytes: a string as it came; any other JSON value of a
    structured event as its JSON, which is no longer than it was in the request (its
    Python repr could be 2.5 times that, and push a dead letter past the DLQ's limit)."""
    if isinstance(value, str):
        return _utf8(value)
    try:
        return _utf8(json.dumps(value, ensure_ascii=False))
    except (RecursionError, ValueError):
        # Nested as deep as json.loads took and no deeper: kept empty, for the record to
        # be handled rather than its request to fail for good.
        return b""


def _topic_of(source: str) -> str | None:
    """The topic after the source's last `#`, if it is a name Kafka allows: anything else
    (a NUL, say, which PostgreSQL refuses in text) would make its dead letter unstorable,
    and the event a poison pill the platform redelivers for good."""
    _, hash_sign, topic = source.rpartition("#")
    return topic if hash_sign and _TOPIC_NAME.fullmatch(topic) else None


def _kafka_position(subject: str) -> tuple[int, int] | None:
    """(partition, offset) of a `partition:<P>#<O>` subject within Kafka's ranges."""
    match = _SUBJECT.match(subject)
    if match is None:
        return None
    partition, offset = int(match[1]), int(match[2])
    if partition > _MAX_PARTITION or offset > _MAX_OFFSET:
        return None
    return partition, offset


def _key_bytes(key: object) -> bytes | None:
    if key is None or isinstance(key, bytes):
        return key
    return _attribute_bytes(key)  # structured mode may carry it as a JSON number


def _unchanged(data: object) -> object:
    return data


def _as_bytes(data: object) -> bytes | None:
    if data is None or isinstance(data, bytes):
        return data
    if isinstance(data, bytearray):
        return bytes(data)
    return _utf8(str(data))


def _utf8(text: str) -> bytes:
    """Bytes of a JSON string, which may hold a lone surrogate (`"\\ud800"`): kept as it
    came, so that the record is handled (and dead-lettered, if malformed) rather than
    a UnicodeEncodeError making the push a 500 the platform redelivers for good."""
    return text.encode("utf-8", "surrogatepass")


def _stable_number(text: str) -> int:
    return int.from_bytes(hashlib.sha256(_utf8(text)).digest()[:8], "big") >> 2
