"""A corpus of malformed records between valid ones: each is dead-lettered with its reason,
the valid ones complete, and the consumer process keeps running."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import pytest
from confluent_kafka import Producer

from shared.errors import BrokerUnavailable
from shared.kafka.config import MAX_RECORD_BYTES, MAX_TASK_RECORD_BYTES
from shared.kafka.envelope import encode_task_message
from shared.moderation.relay import relay_once
from shared.settings import Settings
from tests.fault.load import create_published_tasks, dead_letter_rows, status_counts
from tests.fault.poison_corpus import CORPUS, MALFORMED, PoisonRecord
from tests.fault.raw_producer import produce_with_raw_header
from tests.fault.waiting import wait_for
from tests.integration.database_rows import seed_ads
from tests.integration.kafka_records import read_topic
from tests.integration.wiring import wired_services

pytestmark = [pytest.mark.fault, pytest.mark.integration]

VALID_TASKS = 30
DELIVERY_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class Produced:
    partition: int
    offset: int


def _produce_in_order(
    settings: Settings,
    records: list[tuple[bytes | None, bytes | None]],
    partition: int | None = None,
):
    """Produce `records` in this order (to `partition`, if given); where each landed."""
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "message.max.bytes": MAX_RECORD_BYTES,
        }
    )
    landed: dict[int, Produced | str] = {}
    for index, (key, value) in enumerate(records):

        def on_delivery(error, message, index=index):
            landed[index] = str(error) if error else Produced(message.partition(), message.offset())

        producer.produce(
            settings.kafka_moderation_topic,
            key=key,
            value=value,
            on_delivery=on_delivery,
            **({} if partition is None else {"partition": partition}),
        )
        producer.poll(0)
    if producer.flush(DELIVERY_TIMEOUT_S):
        pytest.fail(f"records not delivered to Kafka within {DELIVERY_TIMEOUT_S:g} s")
    failed = {index: outcome for index, outcome in landed.items() if isinstance(outcome, str)}
    assert failed == {}, f"Kafka refused records of the test itself: {failed}"
    return [landed[index] for index in range(len(records))]


def _interleaved(poison: list[PoisonRecord], valid: list[tuple[bytes, bytes]]):
    """Poison and valid records alternating, so each valid one sits between bad ones."""
    records: list[tuple[bytes | None, bytes | None]] = []
    kinds: list[PoisonRecord | None] = []
    remaining = list(valid)
    for index, record in enumerate(poison):
        records.append((record.key, record.value))
        kinds.append(record)
        if remaining and index % 2 == 1:
            records.append(remaining.pop(0))
            kinds.append(None)
    records.extend(remaining)
    kinds.extend([None] * len(remaining))
    return records, kinds


def _headers(message) -> dict[str, str]:
    return {name: value.decode() for name, value in message.headers() or []}


def test_every_poison_record_is_dead_lettered_with_its_reason_while_the_valid_ones_complete(
    settings, start_consumer
):
    with wired_services(settings) as services:
        tasks = create_published_tasks(services, seed_ads(services, VALID_TASKS))
        valid = [encode_task_message(task_id, item_id) for task_id, item_id in tasks]
        records, kinds = _interleaved(list(CORPUS), valid)
        consumer = start_consumer()

        landed = _produce_in_order(settings, records)
        wait_for(
            lambda: status_counts(services)["completed"] == VALID_TASKS,
            timeout_s=60,
            what=f"the {VALID_TASKS} valid tasks completed between the poison records",
            seen=lambda: f"{status_counts(services)}\n{consumer.log_tail()}",
            watch=[consumer],
        )
        letters = read_topic(settings, settings.kafka_dlq_topic, expected=len(CORPUS), timeout_s=30)
        alive_after_all = consumer.is_alive()
        exit_code = consumer.stop()

        expected = {
            (where.partition, where.offset): kind
            for where, kind in zip(landed, kinds, strict=True)
            if kind is not None
        }
        by_source = {}
        for letter in letters:
            headers = _headers(letter)
            source = (int(headers["x-source-partition"]), int(headers["x-source-offset"]))
            assert source not in by_source, f"two DLQ records for {expected.get(source)}"
            by_source[source] = (letter, headers)
        missing = [kind.name for source, kind in expected.items() if source not in by_source]
        assert missing == []
        assert set(by_source) == set(expected), "a DLQ record for a record that was not poison"
        for source, kind in expected.items():
            letter, headers = by_source[source]
            assert (letter.key(), letter.value()) == (kind.key, kind.value), kind.name
            assert headers["x-exception-type"] == kind.exception_type, kind.name
            assert kind.reason in headers["x-exception-message"], (kind.name, headers)
            assert headers["x-error-class"] == "permanent", kind.name
            assert headers["x-attempts"] == "1", kind.name
            assert headers["x-source-topic"] == settings.kafka_moderation_topic, kind.name
        # The issue asks for at least 50 malformed records; the corpus also holds
        # well-formed records that name no task, which are dead-lettered differently.
        malformed_letters = [h for _, h in by_source.values() if h["x-exception-type"] == MALFORMED]
        assert len(malformed_letters) >= 50
        assert status_counts(services) == {"completed": VALID_TASKS}
        assert dead_letter_rows(services) == len(CORPUS)
        assert alive_after_all and exit_code == 0, consumer.log_tail()


def test_deeply_nested_json_record_is_dead_lettered_instead_of_stalling_its_partition(
    settings, start_consumer
):
    with wired_services(settings) as services:
        ((task_id, item_id),) = create_published_tasks(services, seed_ads(services, 1))
        deep = b"[" * 2000 + b"]" * 2000  # under the 4096-byte envelope limit
        consumer = start_consumer()

        _produce_in_order(settings, [(b"1", deep), encode_task_message(task_id, item_id)], 0)
        wait_for(
            lambda: status_counts(services)["completed"] == 1 and dead_letter_rows(services) == 1,
            timeout_s=12,
            what="the nested record dead-lettered and the task behind it completed",
            seen=lambda: f"{status_counts(services)}, {dead_letter_rows(services)} dead letter(s)",
            watch=[consumer],
        )

        (letter,) = read_topic(settings, settings.kafka_dlq_topic, expected=1)
        assert letter.value() == deep
        assert _headers(letter)["x-exception-type"] == "MalformedMessage"


def test_records_whose_header_name_is_not_utf8_are_handled_without_stalling_their_partition(
    settings, start_consumer
):
    # confluent-kafka cannot decode such a header name, and used to fail the whole batch
    # before the handler saw it, replaying it for good.
    with wired_services(settings) as services:
        (first, behind) = create_published_tasks(services, seed_ads(services, 2))
        bad_header = (b"\xff\xfe-trace", b"anything")
        records = [
            (*encode_task_message(*first), bad_header),  # a valid task: it completes
            (b"1", b"not json", bad_header),  # malformed: dead-lettered with its reason
            (*encode_task_message(*behind), None),  # the record behind them
        ]
        consumer = start_consumer()

        produce_with_raw_header(
            settings.kafka_bootstrap_servers, settings.kafka_moderation_topic, records, partition=0
        )
        wait_for(
            lambda: status_counts(services)["completed"] == 2 and dead_letter_rows(services) == 1,
            timeout_s=20,
            what="both tasks completed and the malformed record dead-lettered",
            seen=lambda: (
                f"{status_counts(services)}, {dead_letter_rows(services)} dead letter(s)"
                f"\n{consumer.log_tail()}"
            ),
            watch=[consumer],
        )

        (letter,) = read_topic(settings, settings.kafka_dlq_topic, expected=1)
        assert letter.value() == b"not json"
        assert _headers(letter)["x-exception-type"] == "MalformedMessage"
        assert "headers cannot be decoded" in consumer.log_path.read_text(errors="replace")
        assert consumer.is_alive(), consumer.log_tail()


def _unpublished_dead_letters(services) -> int:
    with services.db.transaction() as tx:
        return tx.conn.execute(
            "SELECT count(*) FROM dead_letters WHERE published_at IS NULL"
        ).fetchone()[0]


def _relay_sweep(services) -> None:
    # What RelayWorker does with a failed sweep: log it and sweep again next interval.
    with contextlib.suppress(BrokerUnavailable):
        relay_once(services)


def test_poison_record_at_the_size_limit_is_dead_lettered_once_without_blocking_later_ones(
    settings, start_consumer
):
    with wired_services(settings) as services:
        # The largest record `moderation` lets in; its DLQ copy adds our headers.
        at_limit = b"x" * (MAX_TASK_RECORD_BYTES - 256)
        records = [(None, b"before"), (None, at_limit), (None, b"after")]
        consumer = start_consumer()

        _produce_in_order(settings, records, 0)
        wait_for(
            lambda: dead_letter_rows(services) == len(records),
            timeout_s=30,
            what="the three records in the dead-letter outbox",
            watch=[consumer],
        )
        wait_for(
            lambda: _relay_sweep(services) or _unpublished_dead_letters(services) == 0,
            timeout_s=10,
            what="the relay to publish every dead letter",
            seen=lambda: f"{_unpublished_dead_letters(services)} unpublished",
        )

        letters = read_topic(settings, settings.kafka_dlq_topic, expected=len(records))
        assert sorted(len(m.value()) for m in letters) == sorted(len(v) for _, v in records)
