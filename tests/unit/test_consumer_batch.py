"""The consumer's batch handler against in-memory adapters: every rule, no I/O."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from shared.bootstrap import Services
from shared.db.dead_letters import DeadLetter
from shared.domain import Ad, BatchVerdicts, Verdict
from shared.errors import (
    DatabaseUnavailable,
    InvalidFeatures,
    MalformedMessage,
    PartlyAcknowledged,
)
from shared.kafka.envelope import encode_task_message
from shared.kafka.record import ConsumedRecord
from shared.moderation.batch import process_moderation_batch
from shared.moderation.dead_letters import build_dead_letter
from shared.moderation.relay import relay_once
from tests.fakes import FakeModel, FakeModelLoader, fake_services

TOPIC = "moderation"


def _ad(item_id: int, name: str = "Bicycle") -> Ad:
    return Ad(item_id, 1, True, name, "A good bicycle, barely used.", 3, 2)


def _record(value: bytes | None, offset: int, key: bytes | None = b"1") -> ConsumedRecord:
    return ConsumedRecord(topic=TOPIC, partition=0, offset=offset, key=key, value=value)


def _accepted_task(services, item_id: int, name: str = "Bicycle") -> ConsumedRecord:
    services.db.add_ad(_ad(item_id, name))
    with services.db.transaction() as tx:
        task_id = tx.create_task_for_existing_ad(item_id)
    key, value = encode_task_message(task_id, item_id)
    return _record(value, offset=task_id, key=key)


def _headers(record) -> dict[str, str]:
    return {name: value.decode() for name, value in record.headers}


def test_valid_task_is_completed_with_the_models_verdict_and_nothing_dead_lettered():
    services = fake_services()
    record = _accepted_task(services, 7, name="SPAM deal")

    report = process_moderation_batch(services, [record])

    task = services.db.state.tasks[1]
    assert (task.status, task.is_violation, task.probability) == ("completed", True, 0.9)
    assert task.model_version == "fake-model-1" and task.attempts == 1
    assert report.completed == 1 and report.dead_lettered == 0
    assert services.publisher.on_topic("moderation_dlq") == []


def test_a_whole_batch_is_scored_in_one_model_call_on_one_connection():
    services = fake_services()
    records = [_accepted_task(services, item_id) for item_id in range(1, 51)]
    transactions_before = services.db.transactions

    process_moderation_batch(services, records)

    assert services.model.model.calls == [50]
    assert services.db.transactions - transactions_before == 1
    assert all(t.status == "completed" for t in services.db.state.tasks.values())


def test_the_same_task_twice_in_one_batch_is_scored_once_and_counted_as_a_duplicate():
    services = fake_services()
    first, second = _accepted_task(services, 1), _accepted_task(services, 2)
    again = first._replace(offset=99)  # republished by the relay, say

    report = process_moderation_batch(services, [first, second, again])

    assert services.model.model.calls == [2]
    assert (report.completed, report.duplicates, report.dead_lettered) == (2, 1, 0)
    assert services.db.state.tasks[1].attempts == 1


class _ModelRejecting(FakeModel):
    """Refuses, as the real model does, a batch holding an ad it cannot score."""

    def predict(self, ads: list[Ad]) -> list[Verdict]:
        if any(ad.name == "UNSCORABLE" for ad in ads):
            raise InvalidFeatures("ad has a field the model cannot score")
        return super().predict(ads)


def test_an_ad_the_model_rejects_fails_alone_and_the_rest_of_its_batch_completes():
    services = fake_services()
    services.model = FakeModelLoader(_ModelRejecting())
    spam = _accepted_task(services, 1, name="SPAM deal")
    bad = _accepted_task(services, 2, name="UNSCORABLE")
    fine = _accepted_task(services, 3)

    report = process_moderation_batch(services, [spam, bad, fine])

    tasks = services.db.state.tasks
    assert (tasks[1].status, tasks[1].is_violation, tasks[1].probability) == (
        "completed",
        True,
        0.9,
    )
    assert (tasks[3].status, tasks[3].is_violation, tasks[3].probability) == (
        "completed",
        False,
        0.1,
    )
    assert tasks[1].model_version == tasks[3].model_version == "fake-model-1"
    assert tasks[2].status == "failed" and "cannot score" in tasks[2].error_message
    dlq = services.publisher.on_topic("moderation_dlq")
    assert [_headers(letter)["x-task-id"] for letter in dlq] == ["2"]
    assert (report.completed, report.failed, report.dead_lettered) == (2, 1, 1)


class _ModelCrashing(FakeModel):
    """Raises an unexpected error (a bug, not a refusal) on a batch holding a poison ad."""

    def __init__(self, poison: str = "POISON") -> None:
        super().__init__()
        self.poison = poison

    def predict(self, ads: list[Ad]) -> list[Verdict]:
        if any(self.poison in ad.name for ad in ads):
            raise ValueError("math domain error")
        return super().predict(ads)


def test_an_ad_the_model_crashes_on_fails_alone_at_once_and_the_rest_of_its_batch_completes():
    services = fake_services()
    services.model = FakeModelLoader(_ModelCrashing())
    records = [
        _accepted_task(services, 1, name="SPAM deal"),
        _accepted_task(services, 2, name="POISON"),
        _accepted_task(services, 3),
    ]

    report = process_moderation_batch(services, records)

    tasks = services.db.state.tasks
    assert [tasks[i].status for i in (1, 2, 3)] == ["completed", "failed", "completed"]
    # The exception's own text is for the operator, in the letter; the task says what happened.
    assert tasks[2].error_message == "the model failed on this ad"
    (letter,) = services.publisher.on_topic("moderation_dlq")
    headers = _headers(letter)
    assert (headers["x-task-id"], headers["x-error-class"]) == ("2", "permanent")
    assert headers["x-exception-type"] == "ModelFailedOnAd"
    assert headers["x-exception-message"].endswith("ValueError: math domain error")
    assert (report.completed, report.failed, report.dead_lettered, report.retries) == (2, 1, 1, 0)
    assert services.sleeper.waits == []


class _ModelGivingNaN(FakeModel):
    def predict_batch(self, ads: list[Ad]) -> BatchVerdicts:
        verdicts = super().predict_batch(ads)
        probability = verdicts.probability.copy()
        probability[[ad.name == "NAN" for ad in ads]] = float("nan")
        return BatchVerdicts(verdicts.is_violation, probability, verdicts.model_version)


def test_an_ad_the_model_scores_nan_fails_alone_and_the_rest_of_its_batch_completes():
    services = fake_services()
    services.model = FakeModelLoader(_ModelGivingNaN())
    records = [_accepted_task(services, 1), _accepted_task(services, 2, name="NAN")]

    report = process_moderation_batch(services, records)

    tasks = services.db.state.tasks
    assert (tasks[1].status, tasks[2].status) == ("completed", "failed")
    assert tasks[2].error_message == "the model failed on this ad"
    (letter,) = services.publisher.on_topic("moderation_dlq")
    assert "probability outside [0, 1]" in _headers(letter)["x-exception-message"]
    assert (report.completed, report.failed, report.retries) == (1, 1, 0)


class _ModelRefusingOneAndCrashingOnAnother(_ModelRejecting, _ModelCrashing):
    """Refuses an UNSCORABLE ad first (_ModelRejecting), then crashes on its poison."""


def test_a_model_crashing_on_every_ad_but_one_it_refuses_fails_that_one_and_retries_the_rest():
    # A refusal is about one ad's fields, and says nothing of whether the model works.
    services = fake_services()
    services.model = FakeModelLoader(_ModelRefusingOneAndCrashingOnAnother(poison=""))
    records = [_accepted_task(services, 1, "UNSCORABLE")] + [
        _accepted_task(services, item_id) for item_id in (2, 3, 4)
    ]

    report = process_moderation_batch(services, records)

    tasks = services.db.state.tasks
    assert "cannot score" in tasks[1].error_message and tasks[1].attempts == 1
    assert services.sleeper.waits == [5.0, 10.0, 20.0]
    for task_id in (2, 3, 4):
        assert tasks[task_id].status == "failed" and tasks[task_id].attempts == 4
        assert tasks[task_id].error_message == "gave up after 4 attempts: an unexpected error"
    assert (report.failed, report.dead_lettered, report.retries) == (4, 4, 3)


class _ModelFailingOnBatchesOnly(FakeModel):
    def predict(self, ads: list[Ad]) -> list[Verdict]:
        if len(ads) > 1:
            raise MemoryError("cannot allocate the batch's arrays")
        return super().predict(ads)


def test_a_model_failing_on_whole_batches_only_scores_ad_by_ad_and_says_so(caplog):
    services = fake_services()
    services.model = FakeModelLoader(_ModelFailingOnBatchesOnly())
    records = [_accepted_task(services, item_id) for item_id in (1, 2, 3)]

    report = process_moderation_batch(services, records)

    # The batch call raised before it counted; then one call per ad.
    assert report.completed == 3 and services.model.model.calls == [1, 1, 1]
    [logged] = [r for r in caplog.records if r.levelname == "ERROR"]
    assert "on none of its ads alone" in logged.getMessage()
    assert logged.exc_info is not None and logged.exc_info[0] is MemoryError


def test_a_model_crashing_on_every_ad_is_retried_like_an_outage_then_fails_the_batch():
    services = fake_services()
    services.model = FakeModelLoader(_ModelCrashing(poison=""))  # every name holds ""
    records = [_accepted_task(services, item_id) for item_id in (1, 2)]

    report = process_moderation_batch(services, records)

    assert services.sleeper.waits == [5.0, 10.0, 20.0]
    tasks = services.db.state.tasks
    assert all(t.status == "failed" and t.attempts == 4 for t in tasks.values())
    assert tasks[1].error_message == "gave up after 4 attempts: an unexpected error"
    letter = services.publisher.on_topic("moderation_dlq")[0]
    assert _headers(letter)["x-exception-message"] == "unexpected ValueError: math domain error"
    assert (report.failed, report.dead_lettered, report.retries) == (2, 2, 3)


def test_an_attempt_whose_dead_letter_cannot_be_written_writes_nothing_at_all():
    services = fake_services()
    valid = _accepted_task(services, 1)
    orphan = _accepted_task(services, 2)
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
    before = _accepted_task(services, 1)
    after = _accepted_task(services, 2)
    poison = _record(value, offset=100)

    report = process_moderation_batch(services, [before, poison, after])

    dlq = services.publisher.on_topic("moderation_dlq")
    assert len(dlq) == 1
    headers = _headers(dlq[0])
    assert reason in headers["x-exception-message"]
    assert headers["x-error-class"] == "permanent"
    assert headers["x-exception-type"] == "MalformedMessage"
    assert headers["x-source-offset"] == "100"
    assert dlq[0].value == value and dlq[0].key == b"1"
    assert report.completed == 2


def test_each_letter_is_logged_once_durable_with_its_task_item_and_reason(caplog):
    services = fake_services()
    gone = _accepted_task(services, 5)
    services.db.state.ads.pop(5)
    poison = _record(b"not json", offset=100)
    stranger = _record(encode_task_message(999, 5)[1], offset=101)  # no task 999

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
    record = _accepted_task(services, 5)
    services.db.state.ads.pop(5)

    process_moderation_batch(services, [record])

    (letter,) = services.publisher.on_topic("moderation_dlq")
    headers = _headers(letter)
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


def test_ad_deleted_before_processing_marks_task_failed_and_dead_letters_it():
    services = fake_services()
    record = _accepted_task(services, 5)
    services.db.state.ads.pop(5)

    process_moderation_batch(services, [record])

    task = services.db.state.tasks[1]
    assert (task.status, task.error_message) == ("failed", "Ad not found")
    assert len(services.publisher.on_topic("moderation_dlq")) == 1


def _finished_by_another_consumer_after_our_read(services: Services, task_id: int) -> None:
    """Our read sees the task pending; by the time our UPDATE runs, another consumer
    (the partition's old owner during a rebalance) has committed it as completed."""

    def read_then_lose_the_race(read, tasks_named):
        rows = read(tasks_named)
        tasks = read.__self__.state.tasks
        tasks[task_id] = replace(
            tasks[task_id], status="completed", probability=0.25, model_version="other"
        )
        return rows

    services.db.intercepts["load_tasks_with_ads"] = read_then_lose_the_race


def test_a_task_another_consumer_completes_meanwhile_keeps_its_verdict_and_counts_as_duplicate():
    services = fake_services()
    record = _accepted_task(services, 5)
    _finished_by_another_consumer_after_our_read(services, 1)

    report = process_moderation_batch(services, [record])

    task = services.db.state.tasks[1]
    assert (task.status, task.probability, task.model_version) == ("completed", 0.25, "other")
    assert (report.completed, report.duplicates) == (0, 1)


def test_a_failure_for_a_task_another_consumer_completes_meanwhile_is_not_dead_lettered():
    services = fake_services()
    record = _accepted_task(services, 5)
    services.db.state.ads.pop(5)
    _finished_by_another_consumer_after_our_read(services, 1)

    report = process_moderation_batch(services, [record])

    assert services.db.state.tasks[1].status == "completed"
    assert (report.failed, report.dead_lettered) == (0, 0)
    assert services.publisher.on_topic("moderation_dlq") == []
    assert services.db.state.letters == {}


def test_unknown_task_is_dead_lettered_without_touching_any_row():
    services = fake_services()
    key, value = encode_task_message(404, 1)

    process_moderation_batch(services, [_record(value, offset=3, key=key)])

    (letter,) = services.publisher.on_topic("moderation_dlq")
    assert _headers(letter)["x-exception-type"] == "TaskNotFound"
    assert _headers(letter)["x-task-id"] == "404"
    assert services.db.state.tasks == {}


def test_record_whose_item_id_does_not_match_its_task_is_dead_lettered_and_the_task_kept():
    services = fake_services()
    genuine = _accepted_task(services, 5)
    _, value = encode_task_message(1, 6)

    process_moderation_batch(services, [_record(value, offset=9)])

    assert services.db.state.tasks[1].status == "pending"
    (letter,) = services.publisher.on_topic("moderation_dlq")
    assert "does not match" in _headers(letter)["x-exception-message"]

    process_moderation_batch(services, [genuine])

    assert services.db.state.tasks[1].status == "completed"


def test_a_corrupt_copy_ahead_of_its_real_record_in_one_batch_does_not_hide_it():
    services = fake_services()
    genuine = _accepted_task(services, 5)
    _, value = encode_task_message(1, 6)  # task 1, but another ad
    copy = _record(value, offset=0)

    report = process_moderation_batch(services, [copy, genuine])

    assert services.db.state.tasks[1].status == "completed"
    (letter,) = services.publisher.on_topic("moderation_dlq")
    assert _headers(letter)["x-source-offset"] == "0"
    assert "does not match" in _headers(letter)["x-exception-message"]
    assert (report.completed, report.duplicates, report.dead_lettered) == (1, 0, 1)


def test_what_a_read_sorts_out_is_settled_at_once_while_the_model_is_down():
    services = fake_services()
    services.model = FakeModelLoader(fail_times=100)
    scorable = _accepted_task(services, 1)
    gone = _accepted_task(services, 2)
    services.db.state.ads.pop(2)
    elsewhere = _accepted_task(services, 3)  # task 3: its own record is in another batch
    _, copy_value = encode_task_message(3, 9)
    _, unknown_value = encode_task_message(404, 1)
    batch = [scorable, gone, _record(copy_value, offset=20), _record(unknown_value, offset=21)]
    letters_at_each_wait = []
    services.sleeper = lambda seconds: letters_at_each_wait.append(
        len(services.publisher.on_topic("moderation_dlq"))
    )

    report = process_moderation_batch(services, batch)

    tasks = services.db.state.tasks
    # Settled by the first read: dead-lettered before the first retry wait, and never
    # counted as an attempt.
    assert letters_at_each_wait == [3, 3, 3]
    assert (tasks[2].status, tasks[2].attempts) == ("failed", 1)
    assert tasks[2].error_message == "Ad not found"
    # The copy counted nothing against the real task it names.
    assert (tasks[3].status, tasks[3].attempts) == ("pending", 0)
    # Only the task that could be scored went through the schedule.
    assert (tasks[1].status, tasks[1].attempts) == ("failed", 4)
    types = sorted(
        _headers(r)["x-exception-type"] for r in services.publisher.on_topic("moderation_dlq")
    )
    assert types == ["AdNotFound", "ModelUnavailable", "RecordDoesNotMatchTask", "TaskNotFound"]
    assert (report.failed, report.dead_lettered) == (2, 4)

    services.model = FakeModelLoader()
    process_moderation_batch(services, [elsewhere])
    assert services.db.state.tasks[3].status == "completed"


def test_records_never_read_before_the_schedule_ran_out_are_sorted_out_before_failing():
    services = fake_services()
    real = _accepted_task(services, 5)
    _, copy_value = encode_task_message(1, 6)  # task 1, but another ad
    _, unknown_value = encode_task_message(404, 1)
    batch = [_record(copy_value, offset=10), real, _record(unknown_value, offset=11)]
    reads = []

    def read_failing_on_every_attempt(read, tasks):
        reads.append(len(tasks))
        if len(reads) <= 4:  # the four attempts; the count UPDATEs still get through
            raise DatabaseUnavailable("PostgreSQL unavailable: read timed out")
        return read(tasks)

    services.db.intercepts["load_tasks_with_ads"] = read_failing_on_every_attempt

    report = process_moderation_batch(services, batch)

    task = services.db.state.tasks[1]
    assert (task.status, task.attempts) == ("failed", 4)
    letters = {
        _headers(letter)["x-source-offset"]: _headers(letter)
        for letter in services.publisher.on_topic("moderation_dlq")
    }
    assert letters.keys() == {"10", str(real.offset), "11"}
    assert letters["10"]["x-exception-type"] == "RecordDoesNotMatchTask"
    assert letters["11"]["x-exception-type"] == "TaskNotFound"
    assert letters[str(real.offset)]["x-exception-type"] == "DatabaseUnavailable"
    assert letters[str(real.offset)]["x-attempts"] == "4"
    assert (report.failed, report.dead_lettered) == (1, 3)


def test_a_corrupt_copy_whose_read_failed_counts_no_attempt_against_the_real_task():
    services = fake_services()
    _accepted_task(services, 5)  # task 1; its own record is in another batch
    _, copy_value = encode_task_message(1, 6)  # task 1, but another ad
    reads = []

    def read_failing_once(read, tasks):
        reads.append(len(tasks))
        if len(reads) == 1:  # the count UPDATE after it still gets through
            raise DatabaseUnavailable("PostgreSQL unavailable: read timed out")
        return read(tasks)

    services.db.intercepts["load_tasks_with_ads"] = read_failing_once

    process_moderation_batch(services, [_record(copy_value, offset=40)])

    # The failed read could not tell the copy from the task's own record; the count
    # told them apart by the ad.
    task = services.db.state.tasks[1]
    assert (task.status, task.attempts, task.error_message) == ("pending", 0, None)
    (letter,) = services.publisher.on_topic("moderation_dlq")
    assert _headers(letter)["x-exception-type"] == "RecordDoesNotMatchTask"


def test_an_ad_deleted_during_the_retries_fails_its_task_with_the_attempts_it_had():
    services = fake_services()
    services.model = FakeModelLoader(fail_times=3)
    record = _accepted_task(services, 1)
    outage = {"reads_to_fail": 0}

    def read_failing_when_told(read, tasks):
        if outage["reads_to_fail"]:
            outage["reads_to_fail"] -= 1
            raise DatabaseUnavailable("PostgreSQL unavailable: read timed out")
        return read(tasks)

    waits = []

    def before_each_retry(seconds):
        if len(waits) == 2:  # before the fourth attempt, the last
            services.db.state.ads.pop(1)
            outage["reads_to_fail"] = 1  # its read fails; the count and re-read do not
        waits.append(seconds)

    services.sleeper = before_each_retry
    services.db.intercepts["load_tasks_with_ads"] = read_failing_when_told

    process_moderation_batch(services, [record])

    task = services.db.state.tasks[1]
    assert (task.status, task.attempts, task.error_message) == ("failed", 4, "Ad not found")
    (letter,) = services.publisher.on_topic("moderation_dlq")
    headers = _headers(letter)
    assert (headers["x-error-class"], headers["x-attempts"]) == ("permanent", "4")
    assert waits == [5.0, 10.0, 20.0]


def test_what_a_rolled_back_transaction_sorted_out_is_counted_once():
    services = fake_services()
    services.model = FakeModelLoader(fail_times=100)
    finished_elsewhere, exhausted = _accepted_task(services, 1), _accepted_task(services, 2)
    outage = {"reads": 0, "writes": 0}

    def read_failing_when_told(read, tasks):
        if outage["reads"]:
            outage["reads"] -= 1
            raise DatabaseUnavailable("PostgreSQL unavailable: read timed out")
        return read(tasks)

    def fail_tasks_failing_when_told(write_failures, failures):
        if failures and outage["writes"]:
            outage["writes"] -= 1
            raise DatabaseUnavailable("PostgreSQL unavailable: connection lost mid-write")
        return write_failures(failures)

    def before_each_retry(seconds):
        if seconds == 20.0:
            # Before the last attempt another consumer finishes task 1, and that attempt's
            # read fails: what it would have sorted out is left to the transaction that
            # fails the exhausted tasks, whose write fails once and is made again.
            services.db.state.tasks[1] = replace(services.db.state.tasks[1], status="completed")
            outage["reads"], outage["writes"] = 1, 1

    services.sleeper = before_each_retry
    services.db.intercepts["load_tasks_with_ads"] = read_failing_when_told
    services.db.intercepts["fail_tasks"] = fail_tasks_failing_when_told

    report = process_moderation_batch(services, [finished_elsewhere, exhausted])

    assert outage == {"reads": 0, "writes": 0}
    assert services.db.state.tasks[2].status == "failed"
    # The rolled-back transaction's read found task 1 finished, and so did the next: one
    # duplicate, not two.
    assert (report.duplicates, report.failed, report.dead_lettered) == (1, 1, 1)


def test_a_corrupt_copy_of_a_finished_task_is_dead_lettered_not_taken_for_a_duplicate():
    services = fake_services()
    done = _accepted_task(services, 5)
    process_moderation_batch(services, [done])
    _, copy_value = encode_task_message(1, 6)

    report = process_moderation_batch(services, [_record(copy_value, offset=30)])

    (letter,) = services.publisher.on_topic("moderation_dlq")
    assert _headers(letter)["x-exception-type"] == "RecordDoesNotMatchTask"
    assert services.db.state.tasks[1].status == "completed"
    assert (report.duplicates, report.dead_lettered) == (0, 1)


def test_a_redelivered_finished_task_counts_as_one_duplicate_however_often_its_batch_retries():
    services = fake_services()
    done = _accepted_task(services, 1)
    process_moderation_batch(services, [done])
    services.model = FakeModelLoader(fail_times=2)
    pending = _accepted_task(services, 2)

    report = process_moderation_batch(services, [done, pending])

    assert report.retries == 2
    assert (report.duplicates, report.completed) == (1, 1)


def test_json_nested_too_deeply_is_dead_lettered_and_its_neighbours_complete():
    services = fake_services()
    valid = _accepted_task(services, 1)
    nested = b"[" * 2000 + b"]" * 2000

    report = process_moderation_batch(services, [_record(nested, offset=50), valid])

    (letter,) = services.publisher.on_topic("moderation_dlq")
    assert "nested too deeply" in _headers(letter)["x-exception-message"]
    assert report.completed == 1


def test_redelivered_record_changes_nothing_and_is_not_dead_lettered_twice():
    services = fake_services()
    done = _accepted_task(services, 1)
    gone = _accepted_task(services, 2)
    services.db.state.ads.pop(2)
    process_moderation_batch(services, [done, gone])
    first = services.db.state.tasks[1]

    report = process_moderation_batch(services, [done, gone])

    assert services.db.state.tasks[1] == first
    assert len(services.publisher.on_topic("moderation_dlq")) == 1
    assert report.duplicates == 2 and report.completed == 0


def test_model_unavailable_for_two_attempts_is_retried_then_completed_without_dlq():
    services = fake_services()
    services.model = FakeModelLoader(fail_times=2)
    record = _accepted_task(services, 1)

    report = process_moderation_batch(services, [record])

    task = services.db.state.tasks[1]
    assert task.status == "completed" and task.attempts == 3
    assert services.sleeper.waits == [5.0, 10.0]
    assert report.retries == 2
    assert services.publisher.on_topic("moderation_dlq") == []


def test_retries_follow_the_real_five_ten_twenty_second_schedule():
    services = fake_services()  # default retry settings
    services.model = FakeModelLoader(fail_times=100)
    record = _accepted_task(services, 1)

    process_moderation_batch(services, [record])

    assert services.sleeper.waits == [5.0, 10.0, 20.0]


def test_a_task_waiting_for_its_retry_says_what_is_down_and_no_more():
    services = fake_services()
    services.model = FakeModelLoader(fail_times=1)
    record = _accepted_task(services, 1)
    during_the_wait: list[str | None] = []
    services.sleeper = lambda _: during_the_wait.append(services.db.state.tasks[1].error_message)

    process_moderation_batch(services, [record])

    assert during_the_wait == ["the model is unavailable"]
    assert services.db.state.tasks[1].status == "completed"


def test_model_unavailable_on_every_attempt_fails_the_task_with_one_dlq_record_of_four_attempts():
    services = fake_services()
    services.model = FakeModelLoader(fail_times=100)
    record = _accepted_task(services, 1)

    process_moderation_batch(services, [record])

    task = services.db.state.tasks[1]
    assert task.status == "failed" and task.attempts == 4
    # Any caller may read the task; the outage's own message, which can name a path, a
    # bucket or a host, goes to the letter only.
    assert task.error_message == "gave up after 4 attempts: the model is unavailable"
    (letter,) = services.publisher.on_topic("moderation_dlq")
    headers = _headers(letter)
    assert headers["x-error-class"] == "exhausted"
    assert headers["x-attempts"] == "4"
    assert headers["x-exception-type"] == "ModelUnavailable"
    assert headers["x-exception-message"] == "model unavailable: fake outage"


def test_attempts_already_on_the_row_count_towards_the_limit_after_a_restart():
    services = fake_services()
    services.model = FakeModelLoader(fail_times=100)
    record = _accepted_task(services, 1)
    with services.db.transaction() as tx:
        tx.record_failed_attempt([(1, 1)], "before the restart")
        tx.record_failed_attempt([(1, 1)], "before the restart")

    process_moderation_batch(services, [record])

    assert services.db.state.tasks[1].status == "failed"
    assert services.db.state.tasks[1].attempts == 4
    assert services.sleeper.waits == [5.0]


def test_database_outage_is_retried_and_the_task_completes_once_it_is_back():
    services = fake_services()
    record = _accepted_task(services, 1)
    services.db.unavailable_for = 3  # the attempt, and the two follow-ups that try to count it

    report = process_moderation_batch(services, [record])

    assert services.db.unavailable_for == 0  # the outage was met, not stepped around
    assert report.retries == 2
    assert services.sleeper.waits == [5.0, 10.0]
    assert (report.completed, report.failed, report.dead_lettered) == (1, 0, 0)
    task = services.db.state.tasks[1]
    assert task.status == "completed"
    assert services.publisher.on_topic("moderation_dlq") == []


def test_dlq_publish_failure_keeps_the_letter_in_the_outbox_until_the_relay_sends_it():
    services = fake_services(outbox_grace_s=0)
    record = _accepted_task(services, 1)
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
    records = [_accepted_task(services, item_id) for item_id in (1, 2, 3)]
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

    letter = _malformed_record_letter(_record(b"{}", offset=1), "bad", first_failure_at=first)

    assert letter.headers["x-first-failure-at"] == "2026-12-04T22:57:57+00:00"
    assert letter.headers["x-last-failure-at"].endswith("+00:00")


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
