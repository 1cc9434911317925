"""The consumer's dead letters: what they carry, how they are logged, and their outbox.

Every rule, no I/O."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from shared.db.dead_letters import DeadLetter, StoredDeadLetter
from shared.errors import (
    DatabaseUnavailable,
    MalformedMessage,
    PartlyAcknowledged,
)
from shared.kafka.envelope import encode_task_message
from shared.kafka.record import ConsumedRecord
from shared.moderation.batch import process_moderation_batch
from shared.moderation.dead_letters import build_dead_letter, dead_letter_records
from shared.moderation.relay import relay_once
from tests.fakes import fake_services
from tests.unit.consumer_records import TOPIC, accepted_task, dead_letter_headers, record_of


def test_an_attempt_whose_dead_letter_cannot_be_written_writes_nothing_at_all():
    services = fake_services()
    valid = accepted_task(services, 1)
    orphan = accepted_task(services, 2)
    del services.db.state.ads[2]  # its task fails: Ad not found, with a DLQ record
    seen_between_attempts: list[list[str]] = []

    def insert_fails_once(insert, letters):
        if not seen_between_attempts:
            raise DatabaseUnavailable("PostgreSQL unavailable: connection lost mid-write")
        return insert(letters)

    def record_and_look(record_attempt, tasks_as_named, reason):
        tasks = record_attempt.__self__.state.tasks
        seen_between_attempts.append([t.status for t in tasks.values()])
        return record_attempt(tasks_as_named, reason)

    services.db.intercepts["insert_dead_letters"] = insert_fails_once
    services.db.intercepts["record_failed_attempt"] = record_and_look

    report = process_moderation_batch(services, [valid, orphan])

    # The verdict and the failure went with the letter: the retry found both pending.
    assert seen_between_attempts == [["pending", "pending"]]
    assert [t.status for t in services.db.state.tasks.values()] == ["completed", "failed"]
    assert (report.completed, report.failed, report.dead_lettered, report.retries) == (1, 1, 1, 1)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"not json", "not JSON"),
        (b"", "empty value"),
        (None, "empty value"),
        (b"\xff\xfe\x00", "not valid UTF-8"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"task_id": 1}', "item_id"),
        (b'{"task_id": "1", "item_id": 1}', "task_id"),
        (b'{"task_id": -5, "item_id": 1}', "greater than 0"),
        (b'{"task_id": 99999999999999999999, "item_id": 1}', "less than or equal"),
        (b'{"task_id": 1.5, "item_id": 1}', "task_id"),
        (b'{"task_id": true, "item_id": 1}', "task_id"),
        (b"x" * 1_000_000, "over the 4096-byte limit"),
        # Not bytes at all (a handler fed by hand): that record alone, not its batch.
        ('{"task_id":1,"item_id":1}', "unparseable value"),
    ],
)
def test_malformed_record_is_dead_lettered_with_its_reason_and_valid_neighbours_complete(
    value, reason
):
    services = fake_services()
    before = accepted_task(services, 1)
    after = accepted_task(services, 2)
    poison = record_of(value, offset=100)

    report = process_moderation_batch(services, [before, poison, after])

    dlq = services.publisher.on_topic("moderation_dlq")
    assert len(dlq) == 1
    headers = dead_letter_headers(dlq[0])
    assert reason in headers["x-exception-message"]
    assert headers["x-error-class"] == "permanent"
    assert headers["x-exception-type"] == "MalformedMessage"
    assert headers["x-source-offset"] == "100"
    assert dlq[0].value == value and dlq[0].key == b"1"
    assert report.completed == 2


def test_a_letter_carries_the_records_own_headers_first_and_ours_only_once():
    services = fake_services()
    poison = ConsumedRecord(
        TOPIC,
        0,
        100,
        b"1",
        b"not json",
        (
            ("traceparent", b"00-4bf92f3577b34da6-00f067aa0ba902b7-01"),
            ("raw", b"\x00\xff"),
            ("x-error-class", b"forged"),  # one of ours, from the producer
            ("traceparent", b"a second value"),
        ),
    )

    process_moderation_batch(services, [poison])

    (letter,) = services.publisher.on_topic("moderation_dlq")
    names = [name for name, _ in letter.headers]
    assert letter.headers[:3] == (
        ("traceparent", b"00-4bf92f3577b34da6-00f067aa0ba902b7-01"),
        ("raw", b"\x00\xff"),
        ("traceparent", b"a second value"),
    )
    assert names.count("x-error-class") == 1
    assert dict(letter.headers)["x-error-class"] == b"permanent"
    assert "x-dead-letter-id" in names


def test_each_letter_is_logged_once_durable_with_its_task_item_and_reason(caplog):
    services = fake_services()
    gone = accepted_task(services, 5)
    services.db.state.ads.pop(5)
    poison = record_of(b"not json", offset=100)
    stranger = record_of(encode_task_message(999, 5)[1], offset=101)  # no task 999

    process_moderation_batch(services, [gone, poison, stranger])

    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert sorted(r.getMessage() for r in warnings) == [
        "record dead-lettered",
        "record dead-lettered",
        "task failed and dead-lettered",
    ]  # each letter once, and nothing else
    failed = next(r for r in warnings if r.getMessage().startswith("task failed"))
    malformed = next(r for r in warnings if getattr(r, "offset", None) == 100)
    no_task = next(r for r in warnings if getattr(r, "offset", None) == 101)
    assert (failed.task_id, failed.item_id, failed.error, failed.attempts) == (
        1,
        5,
        "Ad not found",
        1,
    )
    assert (malformed.task_id, malformed.item_id) == (None, None)
    assert "not JSON" in malformed.error
    # The ids the record names, though no task has them: what its client would search for.
    assert (no_task.task_id, no_task.item_id, no_task.error) == (999, 5, "Task not found")


def test_dlq_record_carries_the_whole_documented_envelope():
    services = fake_services(kafka_consumer_group="group-a")
    record = accepted_task(services, 5)
    services.db.state.ads.pop(5)

    process_moderation_batch(services, [record])

    (letter,) = services.publisher.on_topic("moderation_dlq")
    headers = dead_letter_headers(letter)
    assert set(headers) == {
        "x-error-class",
        "x-exception-type",
        "x-exception-message",
        "x-attempts",
        "x-source-topic",
        "x-source-partition",
        "x-source-offset",
        "x-consumer-group",
        "x-task-id",
        "x-first-failure-at",
        "x-last-failure-at",
        "x-dead-letter-id",
    }
    (letter_id,) = services.db.state.letters
    assert headers["x-dead-letter-id"] == str(letter_id)
    assert headers["x-exception-type"] == "AdNotFound"
    assert headers["x-exception-message"] == "Ad not found"
    assert headers["x-attempts"] == "1"
    assert headers["x-source-topic"] == TOPIC and headers["x-source-partition"] == "0"
    assert headers["x-consumer-group"] == "group-a"
    assert headers["x-task-id"] == "1"
    assert (letter.key, letter.value) == (record.key, record.value)


def test_dlq_publish_failure_keeps_the_letter_in_the_outbox_until_the_relay_sends_it():
    services = fake_services(outbox_grace_s=0)
    record = accepted_task(services, 1)
    services.db.state.ads.pop(1)
    services.publisher.fail_times = 1

    process_moderation_batch(services, [record])
    assert services.publisher.on_topic("moderation_dlq") == []

    relay_once(services)

    (letter,) = services.publisher.on_topic("moderation_dlq")
    assert json.loads(letter.value) == {"task_id": 1, "item_id": 1}
    assert services.db.state.letters_published == {1}


def test_a_letter_the_broker_keeps_refusing_holds_back_no_other_letter():
    services = fake_services(outbox_grace_s=0)
    records = [accepted_task(services, item_id) for item_id in (1, 2, 3)]
    for item_id in (1, 2, 3):
        services.db.state.ads.pop(item_id)  # each task fails: Ad not found, one letter each
    refused = records[1].value
    services.publisher.refuses = lambda record: record.value == refused

    process_moderation_batch(services, records)
    sent_inline = len(services.publisher.on_topic("moderation_dlq"))
    for _ in range(2):
        # Only the refused letter is left to sweep: the sweep says so.
        with pytest.raises(PartlyAcknowledged):
            relay_once(services)

    dlq = services.publisher.on_topic("moderation_dlq")
    # Sent once each, right away; only the refused one stays, and is offered again.
    assert sent_inline == 2 and len(dlq) == 2
    assert sorted(json.loads(letter.value)["task_id"] for letter in dlq) == [1, 3]
    assert services.db.state.letters_published == {1, 3}

    services.publisher.refuses = lambda record: False
    relay_once(services)

    dlq = services.publisher.on_topic("moderation_dlq")
    assert sorted(json.loads(letter.value)["task_id"] for letter in dlq) == [1, 2, 3]
    assert services.db.state.letters_published == {1, 2, 3}


def test_a_dead_letter_header_never_carries_a_nul_which_postgresql_refuses_in_jsonb():
    record = ConsumedRecord("moderation", 0, 3, None, b"x")

    letter = _malformed_record_letter(record, "value is not JSON: \x00 found")

    assert all("\x00" not in value for value in letter.headers.values())
    assert letter.headers["x-exception-message"] == "value is not JSON: \\x00 found"


def test_a_letters_failure_times_are_both_in_utc_whatever_the_databases_time_zone():
    tokyo = timezone(timedelta(hours=9))
    first = datetime(2026, 12, 5, 7, 57, 57, tzinfo=tokyo)  # as a session in Tokyo reads it

    letter = _malformed_record_letter(record_of(b"{}", offset=1), "bad", first_failure_at=first)

    assert letter.headers["x-first-failure-at"] == "2026-12-04T22:57:57+00:00"
    assert letter.headers["x-last-failure-at"].endswith("+00:00")


def test_a_long_exception_message_is_cut_to_the_documented_1000_characters():
    # The README promises `x-exception-message` at most 1,000 characters: an exception
    # quoting a whole poison record must not blow up every letter's row and record.
    reason = "x" * 1500

    letter = _malformed_record_letter(record_of(b"{}", offset=1), reason)

    assert letter.headers["x-exception-message"] == "x" * 1000


def test_our_headers_come_in_name_order_whatever_order_the_letter_holds_them_in():
    # The relay re-reads a letter's headers from JSONB, which keeps its own key order, and
    # the consumer sends the ones it built: sorted, every copy of a letter is the same record.
    letter = _malformed_record_letter(record_of(b"{}", offset=1), "bad")
    reordered = replace(letter, headers=dict(reversed(letter.headers.items())))

    (record,) = dead_letter_records("moderation_dlq", [StoredDeadLetter(7, reordered)])

    names = [name for name, _ in record.headers]
    assert names == sorted([*letter.headers, "x-dead-letter-id"])


def _malformed_record_letter(
    record: ConsumedRecord, reason: str, *, first_failure_at: datetime | None = None
) -> DeadLetter:
    """The letter of a record dead-lettered at once, with no task, for `reason`."""
    return build_dead_letter(
        record,
        error=MalformedMessage(reason),
        error_class="permanent",
        attempts=1,
        consumer_group="group",
        task_id=None,
        task_exists=False,
        first_failure_at=first_failure_at,
    )


def test_records_consumed_again_after_being_dead_lettered_count_as_duplicates_once_each():
    # A redelivery (a crash before the offset commit, a rebalance) brings back records
    # already dead-lettered: their letters are not stored twice, and each is counted.
    services = fake_services()
    poison = record_of(b"not json", offset=100)
    stranger = record_of(encode_task_message(999, 5)[1], offset=101)  # no task 999
    first = process_moderation_batch(services, [poison, stranger])

    again = process_moderation_batch(services, [poison, stranger])

    assert (first.dead_lettered, first.duplicates) == (2, 0)
    assert (again.dead_lettered, again.duplicates) == (0, 2)
    assert len(services.publisher.on_topic("moderation_dlq")) == 2
