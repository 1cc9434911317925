"""A Kafka record pushed over HTTP as a CloudEvent (the Knative KafkaSource binding).

KafkaSource puts the record value in the body (binary mode), the key in the `key`
extension, `partition:<P>#<O>` in `subject`, `.../<source>#<topic>` in `source`, and
each Kafka header in an extension `kafkaheader<name>`.

The event is read from the raw request, not by functions-framework's CloudEvent
signature: that one decodes a JSON body before our code runs, so a value nested too
deeply never reached the dead-letter queue (the request failed, and the platform
redelivered it for good), and any other JSON value reached it re-encoded. Here the
value stays the body's bytes; only a structured-mode event, whose data is a JSON value
inside the envelope, carries it as that value's JSON text (or, when its
`datacontenttype` is not JSON, as the string that value is).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping

from cloudevents.exceptions import GenericException
from cloudevents.http import CloudEvent, from_http
from cloudevents.sdk.converters.structured import is_structured

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
    # The SDK's own test: structured when the content type says so or a required `ce-`
    # header is missing. Binary mode's attributes are header values, which a WSGI server
    # hands over decoded as latin-1 (PEP 3333): their bytes are that decoding undone.
    return _record_of(event, default_topic=default_topic, binary=not is_structured(headers))


def _record_of(event: CloudEvent, *, default_topic: str, binary: bool) -> ConsumedRecord:
    attributes = event.get_attributes()
    as_bytes = _header_bytes if binary else _attribute_bytes
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
        key=None if key is None else as_bytes(key),
        value=_as_bytes(
            event.get_data()
            if binary
            else _payload_of(event.get_data(), attributes.get("datacontenttype"))
        ),
        headers=tuple(
            (name[len(_HEADER_PREFIX) :], as_bytes(value))
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


def _header_bytes(value: object) -> bytes:
    """A binary-mode attribute as the bytes its HTTP header carried: the server decoded
    them as latin-1, and encoding the text as UTF-8 again would double-encode every
    non-ASCII byte (a key `clé` would reach its dead letter as `clÃ©`)."""
    if isinstance(value, str):
        try:
            return value.encode("latin-1")
        except UnicodeEncodeError:  # not from a WSGI server: text as it is
            pass
    return _attribute_bytes(value)


def _is_json_type(content_type: object) -> bool:
    """Whether a structured event's `datacontenttype` makes its `data` a JSON value
    (JSON format, section 3.1: so does its absence); with any other type, `data` is a
    JSON string holding the payload itself."""
    if not content_type:
        return True
    media = str(content_type).split(";", 1)[0].strip().lower()
    return media in ("application/json", "text/json") or media.endswith("+json")


def _payload_of(data: object, content_type: object) -> object:
    """A structured event's data (the SDK hands `data` over as its JSON text): the
    string itself when the content type is not JSON, the JSON text otherwise."""
    if isinstance(data, str) and not _is_json_type(content_type) and data.startswith('"'):
        text = json.loads(data)  # the SDK's own json.dumps of a string json.loads read
        if isinstance(text, str):
            return text
    return data


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
