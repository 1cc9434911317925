"""The consumer's 5/10/20 s schedule for temporary errors, and the attempts it counts.

Every rule, no I/O."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from shared.cancellation import BatchLetGo, ShutdownRequested
from shared.domain import Ad, Verdict
from shared.errors import InvalidFeatures
from shared.moderation.batch import process_moderation_batch
from shared.moderation.batch_work import BatchWork
from tests.fakes import FakeModel, FakeModelLoader, fake_services
from tests.unit.consumer_records import accepted_task, dead_letter_headers


def test_model_unavailable_for_two_attempts_is_retried_then_completed_without_dlq():
    services = fake_services()
    services.model = FakeModelLoader(fail_times=2)
    record = accepted_task(services, 1)

    report = process_moderation_batch(services, [record])

    task = services.db.state.tasks[1]
    assert task.status == "completed" and task.attempts == 3
    assert services.sleeper.waits == [5.0, 10.0]
    assert report.retries == 2
    assert services.publisher.on_topic("moderation_dlq") == []


def test_retries_follow_the_real_five_ten_twenty_second_schedule():
    services = fake_services()  # default retry settings
    services.model = FakeModelLoader(fail_times=100)
    record = accepted_task(services, 1)

    process_moderation_batch(services, [record])

    assert services.sleeper.waits == [5.0, 10.0, 20.0]


def test_a_task_waiting_for_its_retry_says_what_is_down_and_no_more():
    services = fake_services()
    services.model = FakeModelLoader(fail_times=1)
    record = accepted_task(services, 1)
    during_the_wait: list[str | None] = []
    services.sleeper = lambda _: during_the_wait.append(services.db.state.tasks[1].error_message)

    process_moderation_batch(services, [record])

    assert during_the_wait == ["the model is unavailable"]
    assert services.db.state.tasks[1].status == "completed"


def test_model_unavailable_on_every_attempt_fails_the_task_with_one_dlq_record_of_four_attempts():
    services = fake_services()
    services.model = FakeModelLoader(fail_times=100)
    record = accepted_task(services, 1)

    process_moderation_batch(services, [record])

    task = services.db.state.tasks[1]
    assert task.status == "failed" and task.attempts == 4
    # Any caller may read the task; the outage's own message, which can name a path, a
    # bucket or a host, goes to the letter only.
    assert task.error_message == "gave up after 4 attempts: the model is unavailable"
    (letter,) = services.publisher.on_topic("moderation_dlq")
    headers = dead_letter_headers(letter)
    assert headers["x-error-class"] == "exhausted"
    assert headers["x-attempts"] == "4"
    assert headers["x-exception-type"] == "ModelUnavailable"
    assert headers["x-exception-message"] == "model unavailable: fake outage"


def test_attempts_already_on_the_row_count_towards_the_limit_after_a_restart():
    services = fake_services()
    services.model = FakeModelLoader(fail_times=100)
    record = accepted_task(services, 1)
    with services.db.transaction() as tx:
        tx.record_failed_attempt([(1, 1)], "before the restart")
        tx.record_failed_attempt([(1, 1)], "before the restart")
    # The first failure is older than the whole 5 + 10 + 20 s schedule.
    services.db.state.first_failures[1] = datetime.now(UTC) - timedelta(seconds=36)

    process_moderation_batch(services, [record])

    assert services.db.state.tasks[1].status == "failed"
    assert services.db.state.tasks[1].attempts == 4
    assert services.sleeper.waits == [5.0]


def test_waits_cut_short_by_revokes_do_not_use_up_the_schedule():
    services = fake_services()
    # An outage of four model loads, each delivery let go in the wait after its attempt:
    # four attempts are counted on the row, with none of the waits between them.
    services.model = FakeModelLoader(fail_times=4)
    record = accepted_task(services, 1)
    let_go_in_the_first_wait(services, record, times=4)
    assert services.db.state.tasks[1].attempts == 4
    assert services.db.state.tasks[1].status == "pending"

    report = process_moderation_batch(services, [record])

    assert report.completed == 1
    assert services.db.state.tasks[1].status == "completed"
    assert services.publisher.on_topic("moderation_dlq") == []


def test_a_task_out_of_attempts_is_failed_once_its_first_failure_is_a_schedule_old():
    services = fake_services()
    services.model = FakeModelLoader(fail_times=100)
    record = accepted_task(services, 1)
    let_go_in_the_first_wait(services, record, times=4)
    services.db.state.first_failures[1] = datetime.now(UTC) - timedelta(seconds=35)

    report = process_moderation_batch(services, [record])

    assert (report.failed, report.dead_lettered) == (1, 1)
    assert services.db.state.tasks[1].status == "failed"
    (letter,) = services.publisher.on_topic("moderation_dlq")
    assert dead_letter_headers(letter)["x-attempts"] == "5"


@pytest.mark.parametrize(
    ("attempts", "row_failing_for_s", "seen_here_s", "given_up"),
    [
        (4, 35.0, 0.0, True),  # the row's clock: earlier owners' failures count
        (4, None, 35.0, True),  # the database down at every count: this batch's own clock
        (4, 10.0, 36.0, True),  # the row's first failure recorded late, after an outage
        (4, 34.0, 34.0, False),  # neither clock has seen the schedule's time go by
        (3, 60.0, 60.0, False),  # time alone is not enough: the attempts too
    ],
)
def test_a_task_is_out_of_retries_once_either_clock_has_seen_the_schedule_go_by(
    attempts, row_failing_for_s, seen_here_s, given_up
):
    work = BatchWork(tasks=[], letters=[])
    work.attempts[1] = attempts
    if row_failing_for_s is not None:
        work.row_failing_for_s[1] = row_failing_for_s
    work.failing_since_monotonic[1] = time.monotonic() - seen_here_s

    assert work.out_of_retries(1, limit=4, schedule_s=35.0) is given_up


def let_go_in_the_first_wait(services, record, *, times: int) -> None:
    """`record` delivered `times` times, each batch let go (its partition revoked, or the
    process stopped) in the wait after its first attempt."""

    def let_go(seconds: float) -> None:
        raise BatchLetGo()

    services.sleeper = let_go
    for _ in range(times):
        with pytest.raises(BatchLetGo):
            process_moderation_batch(services, [record])


def test_database_outage_is_retried_and_the_task_completes_once_it_is_back():
    services = fake_services()
    record = accepted_task(services, 1)
    services.db.unavailable_for = 3  # the attempt, and the two follow-ups that try to count it

    report = process_moderation_batch(services, [record])

    assert services.db.unavailable_for == 0  # the outage was met, not stepped around
    assert report.retries == 2
    assert services.sleeper.waits == [5.0, 10.0]
    assert (report.completed, report.failed, report.dead_lettered) == (1, 0, 0)
    task = services.db.state.tasks[1]
    assert task.status == "completed"
    assert services.publisher.on_topic("moderation_dlq") == []


def test_a_retried_batch_is_logged_with_its_partition_offsets_and_its_task(caplog):
    services = fake_services()
    services.model = FakeModelLoader(fail_times=1)
    record = accepted_task(services, 7)

    process_moderation_batch(services, [record])

    [retrying] = [r for r in caplog.records if r.getMessage() == "temporary error, retrying"]
    task_id = services.db.state.tasks.popitem()[0]
    assert (retrying.task_id, retrying.item_id) == (task_id, 7)
    assert (retrying.partition, retrying.first_offset, retrying.last_offset) == (
        record.partition,
        record.offset,
        record.offset,
    )
    assert retrying.records == 1


def test_a_batch_out_of_retries_waiting_for_the_database_says_which_one_it_is(caplog):
    services = fake_services()
    records = [accepted_task(services, 1), accepted_task(services, 2)]
    services.db.unavailable_for = 9  # the schedule (8), then one try to fail the tasks

    process_moderation_batch(services, records)

    [waiting] = [r for r in caplog.records if r.getMessage().startswith("cannot record exhausted")]
    assert (waiting.partition, waiting.records) == (0, 2)
    assert (waiting.first_offset, waiting.last_offset) == (records[0].offset, records[1].offset)
    assert not hasattr(waiting, "task_id")  # two tasks: the offsets say which


def test_a_batch_out_of_retries_says_it_waits_for_the_database_before_the_wait(caplog):
    # Logged as the wait begins: a stop during that wait must not leave it unsaid.
    services = fake_services()
    records = [accepted_task(services, 1)]
    services.db.unavailable_for = 9  # the schedule (8), then one try to fail the task
    waits = []

    def stop_at_the_wait_for_the_database(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 4:  # the schedule's three, then this one
            raise ShutdownRequested()

    services.sleeper = stop_at_the_wait_for_the_database

    with pytest.raises(ShutdownRequested):
        process_moderation_batch(services, records)

    said = [r for r in caplog.records if r.getMessage().startswith("cannot record exhausted")]
    assert len(said) == 1
    assert services.db.state.tasks[1].status == "pending"


def test_a_task_failed_after_a_database_outage_reports_the_attempts_its_row_counts():
    services = fake_services()
    record = accepted_task(services, 1)
    # Earlier owners counted six attempts on the row, the first an hour ago; this batch
    # then counts its four in memory only, the database down throughout its schedule.
    with services.db.transaction() as tx:
        for _ in range(6):
            tx.record_failed_attempt([(1, 1)], "before")
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    services.db.state.first_failures[1] = an_hour_ago
    services.db.unavailable_for = 8

    process_moderation_batch(services, [record])

    task = services.db.state.tasks[1]
    assert (task.status, task.attempts) == ("failed", 6)
    assert task.error_message.startswith("gave up after 6 attempts: ")
    (letter,) = services.publisher.on_topic("moderation_dlq")
    headers = dead_letter_headers(letter)
    assert headers["x-attempts"] == "6"
    assert headers["x-first-failure-at"] == an_hour_ago.isoformat()


class _RefusingEveryAd(FakeModel):
    def predict(self, ads: list[Ad]) -> list[Verdict]:
        raise InvalidFeatures("ad has a field the model cannot score")


@pytest.mark.parametrize("settled_by", ["the ad deleted", "the model refusing the ad"])
def test_a_task_settled_for_good_after_an_outage_counts_the_attempt_the_outage_kept_off_its_row(
    settled_by,
):
    services = fake_services()
    record = accepted_task(services, 1)
    services.db.unavailable_for = 2  # the first attempt, and the try to count it
    if settled_by == "the model refusing the ad":
        services.model = FakeModelLoader(_RefusingEveryAd())

    def delete_the_ad(seconds: float) -> None:
        services.db.state.ads.pop(1, None)

    if settled_by == "the ad deleted":
        services.sleeper = delete_the_ad

    report = process_moderation_batch(services, [record])

    assert services.db.unavailable_for == 0  # the outage was met, not stepped around
    assert (report.retries, report.failed, report.dead_lettered) == (1, 1, 1)
    task = services.db.state.tasks[1]
    assert (task.status, task.attempts) == ("failed", 2)
    (letter,) = services.publisher.on_topic("moderation_dlq")
    assert dead_letter_headers(letter)["x-attempts"] == "2"
