"""What the consumer's read sorts out: deleted ads, unknown tasks, corrupt copies, races
with another consumer, redeliveries, and how they meet the retry schedule.

Every rule, no I/O."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from shared.bootstrap import Services
from shared.errors import (
    DatabaseUnavailable,
)
from shared.kafka.envelope import encode_task_message
from shared.moderation.batch import process_moderation_batch
from tests.fakes import FakeModelLoader, fake_services
from tests.unit.consumer_records import accepted_task, dead_letter_headers, record_of


def test_ad_deleted_before_processing_marks_task_failed_and_dead_letters_it():
    services = fake_services()
    record = accepted_task(services, 5)
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
    record = accepted_task(services, 5)
    _finished_by_another_consumer_after_our_read(services, 1)

    report = process_moderation_batch(services, [record])

    task = services.db.state.tasks[1]
    assert (task.status, task.probability, task.model_version) == ("completed", 0.25, "other")
    assert (report.completed, report.duplicates) == (0, 1)


def test_a_failure_for_a_task_another_consumer_completes_meanwhile_is_not_dead_lettered():
    services = fake_services()
    record = accepted_task(services, 5)
    services.db.state.ads.pop(5)
    _finished_by_another_consumer_after_our_read(services, 1)

    report = process_moderation_batch(services, [record])

    assert services.db.state.tasks[1].status == "completed"
    assert (report.failed, report.dead_lettered) == (0, 0)
    assert report.duplicates == 1  # its outcome, the other consumer's
    assert services.publisher.on_topic("moderation_dlq") == []
    assert services.db.state.letters == {}


def test_unknown_task_is_dead_lettered_without_touching_any_row():
    services = fake_services()
    key, value = encode_task_message(404, 1)

    process_moderation_batch(services, [record_of(value, offset=3, key=key)])

    (letter,) = services.publisher.on_topic("moderation_dlq")
    assert dead_letter_headers(letter)["x-exception-type"] == "TaskNotFound"
    assert dead_letter_headers(letter)["x-task-id"] == "404"
    assert services.db.state.tasks == {}


def test_record_whose_item_id_does_not_match_its_task_is_dead_lettered_and_the_task_kept():
    services = fake_services()
    genuine = accepted_task(services, 5)
    _, value = encode_task_message(1, 6)

    process_moderation_batch(services, [record_of(value, offset=9)])

    assert services.db.state.tasks[1].status == "pending"
    (letter,) = services.publisher.on_topic("moderation_dlq")
    assert "does not match" in dead_letter_headers(letter)["x-exception-message"]

    process_moderation_batch(services, [genuine])

    assert services.db.state.tasks[1].status == "completed"


def test_a_corrupt_copy_ahead_of_its_real_record_in_one_batch_does_not_hide_it():
    services = fake_services()
    genuine = accepted_task(services, 5)
    _, value = encode_task_message(1, 6)  # task 1, but another ad
    copy = record_of(value, offset=0)

    report = process_moderation_batch(services, [copy, genuine])

    assert services.db.state.tasks[1].status == "completed"
    (letter,) = services.publisher.on_topic("moderation_dlq")
    assert dead_letter_headers(letter)["x-source-offset"] == "0"
    assert "does not match" in dead_letter_headers(letter)["x-exception-message"]
    assert (report.completed, report.duplicates, report.dead_lettered) == (1, 0, 1)


def test_what_a_read_sorts_out_is_settled_at_once_while_the_model_is_down():
    services = fake_services()
    services.model = FakeModelLoader(fail_times=100)
    scorable = accepted_task(services, 1)
    gone = accepted_task(services, 2)
    services.db.state.ads.pop(2)
    elsewhere = accepted_task(services, 3)  # task 3: its own record is in another batch
    _, copy_value = encode_task_message(3, 9)
    _, unknown_value = encode_task_message(404, 1)
    batch = [scorable, gone, record_of(copy_value, offset=20), record_of(unknown_value, offset=21)]
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
        dead_letter_headers(r)["x-exception-type"]
        for r in services.publisher.on_topic("moderation_dlq")
    )
    assert types == ["AdNotFound", "ModelUnavailable", "RecordDoesNotMatchTask", "TaskNotFound"]
    assert (report.failed, report.dead_lettered) == (2, 4)

    services.model = FakeModelLoader()
    process_moderation_batch(services, [elsewhere])
    assert services.db.state.tasks[3].status == "completed"


def test_records_never_read_before_the_schedule_ran_out_are_sorted_out_before_failing():
    services = fake_services()
    real = accepted_task(services, 5)
    _, copy_value = encode_task_message(1, 6)  # task 1, but another ad
    _, unknown_value = encode_task_message(404, 1)
    batch = [record_of(copy_value, offset=10), real, record_of(unknown_value, offset=11)]
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
        dead_letter_headers(letter)["x-source-offset"]: dead_letter_headers(letter)
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
    accepted_task(services, 5)  # task 1; its own record is in another batch
    _, copy_value = encode_task_message(1, 6)  # task 1, but another ad
    reads = []

    def read_failing_once(read, tasks):
        reads.append(len(tasks))
        if len(reads) == 1:  # the count UPDATE after it still gets through
            raise DatabaseUnavailable("PostgreSQL unavailable: read timed out")
        return read(tasks)

    services.db.intercepts["load_tasks_with_ads"] = read_failing_once

    process_moderation_batch(services, [record_of(copy_value, offset=40)])

    # The failed read could not tell the copy from the task's own record; the count
    # told them apart by the ad.
    assert len(reads) == 2  # the read that failed, and the one that sorted the copy out
    task = services.db.state.tasks[1]
    assert (task.status, task.attempts, task.error_message) == ("pending", 0, None)
    (letter,) = services.publisher.on_topic("moderation_dlq")
    assert dead_letter_headers(letter)["x-exception-type"] == "RecordDoesNotMatchTask"


def test_an_ad_deleted_during_the_retries_fails_its_task_with_the_attempts_it_had():
    services = fake_services()
    services.model = FakeModelLoader(fail_times=3)
    record = accepted_task(services, 1)
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

    assert outage == {"reads_to_fail": 0}  # the last attempt's read did fail
    task = services.db.state.tasks[1]
    assert (task.status, task.attempts, task.error_message) == ("failed", 4, "Ad not found")
    (letter,) = services.publisher.on_topic("moderation_dlq")
    headers = dead_letter_headers(letter)
    assert (headers["x-error-class"], headers["x-attempts"]) == ("permanent", "4")
    assert waits == [5.0, 10.0, 20.0]


def test_what_a_rolled_back_transaction_sorted_out_is_counted_once():
    services = fake_services()
    services.model = FakeModelLoader(fail_times=100)
    finished_elsewhere, exhausted = accepted_task(services, 1), accepted_task(services, 2)
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
        if seconds == 10.0:
            # The schedule's time has gone by: the fourth attempt's failure gives up.
            for task_id in (1, 2):
                services.db.state.first_failures[task_id] -= timedelta(seconds=35)
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
    done = accepted_task(services, 5)
    process_moderation_batch(services, [done])
    _, copy_value = encode_task_message(1, 6)

    report = process_moderation_batch(services, [record_of(copy_value, offset=30)])

    (letter,) = services.publisher.on_topic("moderation_dlq")
    assert dead_letter_headers(letter)["x-exception-type"] == "RecordDoesNotMatchTask"
    assert services.db.state.tasks[1].status == "completed"
    assert (report.duplicates, report.dead_lettered) == (0, 1)


def test_a_redelivered_finished_task_counts_as_one_duplicate_however_often_its_batch_retries():
    services = fake_services()
    done = accepted_task(services, 1)
    process_moderation_batch(services, [done])
    services.model = FakeModelLoader(fail_times=2)
    pending = accepted_task(services, 2)

    report = process_moderation_batch(services, [done, pending])

    assert report.retries == 2
    assert (report.duplicates, report.completed) == (1, 1)


def test_redelivered_finished_tasks_are_settled_without_the_model_even_while_it_is_down():
    # A replay after a rebalance or a crash re-reads what was finished: it needs no verdict,
    # so a model outage must not hold it through the retry schedule.
    services = fake_services()
    done = [accepted_task(services, 1), accepted_task(services, 2)]
    process_moderation_batch(services, done)
    scored = list(services.model.model.calls)
    services.model = FakeModelLoader(services.model.model, fail_times=4)

    report = process_moderation_batch(services, done)

    assert (report.duplicates, report.completed, report.retries) == (2, 0, 0)
    assert services.model.loads == 0 and services.model.model.calls == scored
    assert services.sleeper.waits == []


def test_json_nested_too_deeply_is_dead_lettered_and_its_neighbours_complete():
    services = fake_services()
    valid = accepted_task(services, 1)
    nested = b"[" * 2000 + b"]" * 2000

    report = process_moderation_batch(services, [record_of(nested, offset=50), valid])

    (letter,) = services.publisher.on_topic("moderation_dlq")
    assert "nested too deeply" in dead_letter_headers(letter)["x-exception-message"]
    assert report.completed == 1


def test_redelivered_record_changes_nothing_and_is_not_dead_lettered_twice():
    services = fake_services()
    done = accepted_task(services, 1)
    gone = accepted_task(services, 2)
    services.db.state.ads.pop(2)
    process_moderation_batch(services, [done, gone])
    first = services.db.state.tasks[1]

    report = process_moderation_batch(services, [done, gone])

    assert services.db.state.tasks[1] == first
    assert len(services.publisher.on_topic("moderation_dlq")) == 1
    assert report.duplicates == 2 and report.completed == 0


def test_each_record_counts_under_one_outcome_and_only_a_taskless_letter_as_rejected():
    services = fake_services()
    finished = accepted_task(services, 1)
    process_moderation_batch(services, [finished])
    scorable = accepted_task(services, 2)
    ad_gone = accepted_task(services, 3)
    services.db.state.ads.pop(3)
    _, unknown = encode_task_message(404, 1)
    _, copy = encode_task_message(2, 6)  # task 2, but another ad
    batch = [
        finished,  # redelivered
        scorable,
        ad_gone,
        record_of(b"not json", offset=40),
        record_of(unknown, offset=41),
        record_of(copy, offset=42),
    ]

    report = process_moderation_batch(services, batch)

    outcomes = (report.completed, report.failed, report.duplicates, report.rejected)
    assert outcomes == (1, 1, 1, 3)
    assert sum(outcomes) == len(batch)
    # The failed task's letter and the three rejected records' letters.
    assert report.dead_lettered == len(services.publisher.on_topic("moderation_dlq")) == 4
