"""A Kafka record delivered as a CloudEvent (the Knative KafkaSource binding).

KafkaSource puts the record value in `data`, the key in the `key` extension,
`partition:<P>#<O>` in `subject` and `.../<source>#<topic>` in `source`.
"""

from __future__ import annotations

import hashlib
import json
import re

from cloudevents.http import CloudEvent

from shared.kafka.record import ConsumedRecord

_SUBJECT = re.compile(r"^partition:(\d+)#(\d+)$")


def record_from_cloud_event(event: CloudEvent, *, default_topic: str) -> ConsumedRecord:
    attributes = event.get_attributes()
    match = _SUBJECT.match(str(attributes.get("subject", "")))
    if match:
        partition, offset = int(match[1]), int(match[2])
    else:
        # No Kafka position: derive a stable negative one from the event id, so a
        # redelivered event still dedupes in the dead-letter outbox.
        partition, offset = -1, -1 - _stable_number(str(attributes.get("id", "")))
    source = str(attributes.get("source", ""))
    topic = source.rsplit("#", 1)[1] if "#" in source else default_topic
    key = attributes.get("key")
    return ConsumedRecord(
        topic=topic,
        partition=partition,
        offset=offset,
        key=key.encode() if isinstance(key, str) else key,
        value=_as_bytes(event.get_data()),
    )


def _as_bytes(data: object) -> bytes | None:
    if data is None or isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode()
    return json.dumps(data).encode()


def _stable_number(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 2
