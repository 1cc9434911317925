"""Records and tasks for the consumer's unit tests: a task accepted as async_predict
accepts one, and its record as the poll loop hands it over."""

from __future__ import annotations

from shared.domain import Ad
from shared.kafka.envelope import encode_task_message
from shared.kafka.record import ConsumedRecord

TOPIC = "moderation"


def ad_named(item_id: int, name: str = "Bicycle") -> Ad:
    return Ad(item_id, 1, True, name, "A good bicycle, barely used.", 3, 2)


def record_of(value: bytes | None, offset: int, key: bytes | None = b"1") -> ConsumedRecord:
    return ConsumedRecord(topic=TOPIC, partition=0, offset=offset, key=key, value=value)


def accepted_task(services, item_id: int, name: str = "Bicycle") -> ConsumedRecord:
    services.db.add_ad(ad_named(item_id, name))
    with services.db.transaction() as tx:
        task_id = tx.create_task_for_existing_ad(item_id)
    key, value = encode_task_message(task_id, item_id)
    return record_of(value, offset=task_id, key=key)


def dead_letter_headers(record) -> dict[str, str]:
    return {name: value.decode() for name, value in record.headers}
