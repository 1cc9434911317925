"""Building DLQ records and publishing them from the dead-letter outbox."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from shared.bootstrap import Services
from shared.db.dead_letters import DeadLetter, StoredDeadLetter
from shared.errors import TemporaryError
from shared.kafka.envelope import parse_task_message
from shared.kafka.record import ConsumedRecord, OutgoingRecord
from shared.moderation.outbox import publish_for_outbox

log = logging.getLogger(__name__)

MAX_ERROR_MESSAGE_CHARS = 1000
PERMANENT = "permanent"
EXHAUSTED = "exhausted"
DEAD_LETTER_ID_HEADER = "x-dead-letter-id"


def build_dead_letter(
    record: ConsumedRecord,
    *,
    error: BaseException,
    error_class: str,
    attempts: int,
    consumer_group: str,
    task_id: int | None,
    task_exists: bool,
    first_failure_at: datetime | None = None,
) -> DeadLetter:
    """The DLQ record: the original key and value unchanged, the context in headers."""
    now = datetime.now(UTC)
    headers = {
        "x-error-class": error_class,
        "x-exception-type": type(error).__name__,
        "x-exception-message": str(error)[:MAX_ERROR_MESSAGE_CHARS],
        "x-attempts": str(attempts),
        "x-source-topic": record.topic,
        "x-source-partition": str(record.partition),
        "x-source-offset": str(record.offset),
        "x-consumer-group": consumer_group,
        "x-task-id": "" if task_id is None else str(task_id),
        # In UTC like the other: the row's time comes in the session's time zone.
        "x-first-failure-at": (first_failure_at or now).astimezone(UTC).isoformat(),
        "x-last-failure-at": now.isoformat(),
    }
    return DeadLetter(
        task_id=task_id if task_exists else None,
        source_topic=record.topic,
        source_partition=record.partition,
        source_offset=record.offset,
        key=record.key,
        value=record.value,
        # PostgreSQL's JSONB refuses a NUL in a string, and a letter it refuses would
        # fail its batch on every delivery; an exception's message may quote one.
        headers={name: value.replace("\x00", "\\x00") for name, value in headers.items()},
        source_headers=record.headers,
    )


def log_dead_letter(stored: StoredDeadLetter) -> None:
    """One WARNING per letter made durable: a failed task, or a record of no task, is
    work the service gave up on, and an operator must be able to find it in the log."""
    letter = stored.letter
    headers = letter.headers
    log.warning(
        "task failed and dead-lettered" if letter.task_id is not None else "record dead-lettered",
        extra={
            # The id the record names, even of no task: the one its client may search for.
            "task_id": int(headers["x-task-id"]) if headers.get("x-task-id") else None,
            "item_id": _item_id(letter.value),
            "dead_letter_id": stored.id,
            "error_class": headers.get("x-error-class"),
            "error": headers.get("x-exception-message"),
            "attempts": int(headers["x-attempts"]),
            "partition": letter.source_partition,
            "offset": letter.source_offset,
        },
    )


def _item_id(value: bytes | None) -> int | None:
    """The item a letter's record names, if it is a task message we can read."""
    try:
        return parse_task_message(value).item_id
    except Exception:
        # Whatever a poison record does to the parser, the log line of a letter already
        # durable must not fail its batch.
        return None


def dead_letter_records(topic: str, stored: Sequence[StoredDeadLetter]) -> list[OutgoingRecord]:
    """The letters as records: the record's key, value and headers as they came, then
    ours, with the outbox row's id (`x-dead-letter-id`): a letter may reach the topic
    twice (see shared/kafka/config.py), and its copies share the id. A header of the
    record's own named as one of ours is left out, so that each of ours is there once and
    a producer cannot pass one off as ours."""
    return [_dead_letter_record(topic, item) for item in stored]


def _dead_letter_record(topic: str, item: StoredDeadLetter) -> OutgoingRecord:
    ours = {**item.letter.headers, DEAD_LETTER_ID_HEADER: str(item.id)}
    theirs = tuple((name, value) for name, value in item.letter.source_headers if name not in ours)
    return OutgoingRecord(
        topic,
        item.letter.key,
        item.letter.value,
        theirs + tuple((name, value.encode()) for name, value in sorted(ours.items())),
    )


def publish_dead_letters(services: Services, stored: Sequence[StoredDeadLetter]) -> None:
    """Publish outbox rows to the DLQ topic and mark them; whatever Kafka does not take
    stays in the outbox for the relay."""
    if not stored:
        return
    try:
        with services.db.transaction() as tx:
            # Locked while they are published, as the relay locks what it claims, so
            # the two can never publish the same letter.
            mine = set(tx.lock_unpublished_dead_letters([item.id for item in stored]))
            claimed = [item for item in stored if item.id in mine]
            topic = services.settings.kafka_dlq_topic
            published = publish_for_outbox(
                services.publisher,
                dead_letter_records(topic, claimed),
                [item.id for item in claimed],
            )
            tx.mark_dead_letters_published(published)
    except TemporaryError as error:
        # Durable in the outbox already; the relay retries until Kafka takes them.
        log.warning(
            "DLQ publish deferred to the relay",
            extra={"dead_letter_ids": [item.id for item in stored], "error": str(error)},
        )
