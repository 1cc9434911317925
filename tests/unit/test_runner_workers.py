"""The runner's background pieces with fakes: the relay thread and the consumer handler."""

from __future__ import annotations

import copy
import json
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import Consumer, TopicPartition
from functions_framework import create_app
from prometheus_client import REGISTRY

from shared.cancellation import ShutdownRequested
from shared.db.dead_letters import DeadLetter
from shared.domain import Ad
from shared.errors import BrokerUnavailable, DatabaseUnavailable
from shared.kafka.envelope import encode_task_message
from shared.kafka.record import ConsumedRecord
from shared.moderation.relay import relay_once
from shared.moderation.tasks import submit_moderation_task
from shared.runner.shutdown import StopSignal
from shared.runner.workers import (
    RelayWorker,
    _AssignmentAwareConsumer,
    load_consumer_handler,
)
from tests.fakes import FakeModelLoader, fake_services, installed


@pytest.fixture
def services():
    # No grace period: these tests relay a task at once, whose publish has failed.
    services = fake_services(outbox_relay_interval_s=0.01, outbox_grace_s=0)
    services.db.add_ad(Ad(1, 1, True, "Road bike", "Serviced", 3, 2))
    with installed(services):
        yield services


def test_a_sweep_publishes_a_task_whose_first_publish_failed(services):
    services.publisher.fail_times = 1
    task_id = submit_moderation_task(services, 1).task_id

    published = RelayWorker(services).sweep_once()

    assert published == 1
    [record] = services.publisher.published
    assert json.loads(record.value) == {"task_id": task_id, "item_id": 1}


def test_a_sweep_that_hits_an_outage_is_logged_and_the_next_one_retries(services, caplog):
    services.publisher.fail_times = 1
    submit_moderation_task(services, 1)
    services.db.unavailable_for = 1
    relay = RelayWorker(services)

    assert relay.sweep_once() == 0
    assert relay.sweep_once() == 1
    assert "outbox relay sweep failed" in caplog.text


def test_the_relay_thread_sweeps_on_its_interval_and_stops_promptly(services):
    services.publisher.fail_times = 1
    submit_moderation_task(services, 1)
    relay = RelayWorker(services)

    relay.start()
    deadline = time.monotonic() + 5.0
    while not services.publisher.published:
        if time.monotonic() > deadline:
            pytest.fail("the relay thread published nothing within 5 s")
        time.sleep(0.01)
    started = time.monotonic()
    stopped = relay.stop(timeout_s=2.0)

    assert stopped
    assert time.monotonic() - started < 1.0


def test_one_turn_of_the_relay_thread_publishes_a_backlog_of_several_batches(services):
    services.settings = services.settings.model_copy(update={"outbox_batch_size": 2})
    services.publisher.fail_times = 5
    for _ in range(5):  # five tasks whose publish failed: three sweeps' worth
        submit_moderation_task(services, 1)
    relay = RelayWorker(services)
    relay._stop = _RecordedWaits(count=1)

    relay._run()

    assert len(services.publisher.published) == 5
    assert relay._stop.waits == [0.01, 0.01]  # one turn, not one per batch


def test_a_letter_the_dlq_refuses_for_good_holds_back_no_backlog_of_tasks(services):
    # One sweep failing says nothing of the other: the tasks drain in the same turn.
    services.settings = services.settings.model_copy(update={"outbox_batch_size": 2})
    services.publisher.fail_times = 5
    for _ in range(5):  # five tasks whose publish failed: three sweeps' worth
        submit_moderation_task(services, 1)
    with services.db.transaction() as tx:
        tx.insert_dead_letters(
            [DeadLetter(None, "moderation", 0, 7, b"k", b"x" * 10, {"x-attempts": "1"})]
        )
    # Over the DLQ's max.message.bytes, say: refused at every try.
    services.publisher.refuses = lambda record: record.topic == services.settings.kafka_dlq_topic
    relay = RelayWorker(services)
    relay._stop = _RecordedWaits(count=1)

    relay._run()

    tasks = services.publisher.on_topic(services.settings.kafka_moderation_topic)
    assert len(tasks) == 5, f"one turn published {len(tasks)} of 5 tasks"
    assert services.publisher.on_topic(services.settings.kafka_dlq_topic) == []


class _RecordedWaits:
    """Stands in for the relay's stop event: records each wait, stops after `count`."""

    def __init__(self, count: int) -> None:
        self.count, self.waits = count, []

    def wait(self, timeout: float) -> bool:
        self.waits.append(timeout)
        return len(self.waits) > self.count

    def set(self) -> None:
        pass


def _sweeping(outcomes: list[Exception | int]):
    """A sweep that raises or returns each of `outcomes` in turn."""
    remaining = iter(outcomes)

    def sweep(_services) -> int:
        outcome = next(remaining)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    return sweep


# A bug that fails every sweep backs off as an outage does: not a traceback every interval.
@pytest.mark.parametrize(
    "failure", [BrokerUnavailable("Kafka unreachable"), RuntimeError("a bug in the sweep")]
)
def test_the_relay_waits_twice_as_long_after_each_failed_sweep_up_to_a_limit(services, failure):
    relay = RelayWorker(services, _sweeping([failure] * 5 + [0, 3]), backoff_max_s=0.05)
    relay._stop = _RecordedWaits(count=7)

    relay._run()

    # The interval is 0.01 s: doubled after each failure up to 0.05, then back to it.
    assert relay._stop.waits == [0.01, 0.02, 0.04, 0.05, 0.05, 0.05, 0.01, 0.01]


def test_the_consumer_handler_is_the_deployed_process_records(services):
    task_id = submit_moderation_task(services, 1).task_id
    key, value = encode_task_message(task_id, 1)
    process_records = load_consumer_handler()

    report = process_records([ConsumedRecord("moderation", 0, 0, key, value)])

    assert report.completed == 1
    assert process_records.__module__ == "moderation_consumer_main"
    assert services.db.state.tasks[task_id].status == "completed"


def test_the_consumer_handlers_report_counts_every_record_it_was_handed(services):
    # The pushed record's log line gives the report whole: `records` is what the
    # outcomes add up to.
    task_id = submit_moderation_task(services, 1).task_id
    key, value = encode_task_message(task_id, 1)
    records = [ConsumedRecord("moderation", 0, 0, key, value)]
    records.append(ConsumedRecord("moderation", 0, 1, b"k", b"not json"))

    report = load_consumer_handler()(records)

    assert (report.records, report.completed, report.rejected) == (2, 1, 1)


def test_each_batch_the_consumer_handler_processes_is_timed_once(services):
    # moderation_batch_duration_seconds is what an alert on slow batches reads.
    timed_before = REGISTRY.get_sample_value("moderation_batch_duration_seconds_count") or 0.0

    load_consumer_handler()([ConsumedRecord("moderation", 0, 0, b"k", b"not json")])

    timed_after = REGISTRY.get_sample_value("moderation_batch_duration_seconds_count") or 0.0
    assert timed_after - timed_before == 1


def test_loading_the_consumer_handler_leaves_an_http_function_already_serving_alone(services):
    # The runner builds its HTTP functions' apps first; one may have served requests by
    # the time the consumer handler is loaded, and Flask refuses a handler added then.
    app = create_app("predict", "functions/predict/main.py")
    assert app.test_client().get("/").status_code == 405
    handlers_before = copy.deepcopy(app.error_handler_spec)

    process_records = load_consumer_handler()

    assert callable(process_records)
    assert app.error_handler_spec == handlers_before


def test_what_a_batch_abandoned_in_a_retry_wait_made_durable_is_counted(services):
    # A valid task the model fails on once, and a record that is not JSON: the first
    # attempt dead-letters the latter, then a stop comes during the retry wait.
    task_id = submit_moderation_task(services, 1).task_id
    key, value = encode_task_message(task_id, 1)
    records = [ConsumedRecord("moderation", 0, 0, key, value)]
    records.append(ConsumedRecord("moderation", 0, 1, b"k", b"not json"))
    services.model = FakeModelLoader(fail_times=1)

    def stop_during_the_wait(seconds):
        raise ShutdownRequested()

    services.sleeper = stop_during_the_wait
    letters_before = REGISTRY.get_sample_value("moderation_dlq_records_total") or 0.0

    with pytest.raises(ShutdownRequested):
        load_consumer_handler()(records)

    # The letter was published, and its record will not be counted when it comes back.
    assert len(services.publisher.on_topic("moderation_dlq")) == 1
    letters_after = REGISTRY.get_sample_value("moderation_dlq_records_total") or 0.0
    assert letters_after - letters_before == 1
    assert services.db.state.tasks[task_id].status == "pending"  # left for the redelivery


class _CallbacksKept(Consumer):
    """Keeps what it is subscribed with, to call its callbacks as the group would."""

    def subscribe(self, topics, **callbacks) -> None:
        self.callbacks = callbacks


class _AssignmentProbe(_AssignmentAwareConsumer, _CallbacksKept):
    pass


def test_an_assignment_of_no_partitions_does_not_count_as_joined():
    # A group with more members than partitions gives some of them none: the runner
    # must still warn that its tasks wait, rather than report the consumer as assigned.
    consumer = _AssignmentProbe(
        {"group.id": "assignment-probe", "bootstrap.servers": "127.0.0.1:1"}
    )
    try:
        consumer.subscribe(["moderation"])
        consumer.callbacks["on_assign"](consumer, [])
        assigned_with_none = consumer.assigned.is_set()
        consumer.callbacks["on_assign"](consumer, [TopicPartition("moderation", 0)])
    finally:
        consumer.close()

    assert not assigned_with_none
    assert consumer.assigned.is_set()


def test_waiting_for_a_stop_signal_ends_early_when_a_worker_dies():
    stop = StopSignal()
    checks = iter([True, True, False])

    signalled = stop.wait(healthy=lambda: next(checks))

    assert signalled is False
    assert not stop.requested.is_set()


def test_waiting_for_a_stop_signal_returns_once_one_is_received():
    stop = StopSignal()
    stop.requested.set()

    assert stop.wait(healthy=lambda: False) is True


def test_a_sweep_whose_tasks_kafka_refuses_still_publishes_the_dead_letters(services):
    # `moderation` refusing every task says nothing of `moderation_dlq`.
    services.publisher.refuses = lambda record: record.topic == "moderation"
    submit_moderation_task(services, 1)  # accepted, its publish left to the relay
    letter = DeadLetter(None, "moderation", 0, 7, b"k", b"not json", {"x-error-class": "permanent"})
    with services.db.transaction() as tx:
        tx.insert_dead_letters([letter])

    before = _outbox_metrics()

    with pytest.raises(BrokerUnavailable):
        relay_once(services)

    [published] = services.publisher.published
    assert (published.topic, published.value) == ("moderation_dlq", b"not json")
    assert services.db.state.letters_published == {1}
    assert services.db.state.published == set()  # the task stays for the next sweep
    # /metrics tells the two sweeps apart.
    after = _outbox_metrics()
    assert {name: after[name] - before[name] for name in after} == {
        ("sweeps", "task", "failed"): 1,
        ("sweeps", "task", "ok"): 0,
        ("sweeps", "dead_letter", "failed"): 0,
        ("sweeps", "dead_letter", "ok"): 1,
        ("published", "task"): 0,
        ("published", "dead_letter"): 1,
    }


def test_a_pass_that_leaves_rows_behind_shows_them_as_the_outbox_backlog(services):
    # Kafka refuses the tasks and takes the letter: the task sweep fails, and what it
    # left is what the gauge shows, while the dead letters' backlog is empty again.
    services.publisher.refuses = lambda record: record.topic == "moderation"
    for _ in range(3):
        submit_moderation_task(services, 1)
    letter = DeadLetter(None, "moderation", 0, 7, b"k", b"not json", {"x-error-class": "permanent"})
    with services.db.transaction() as tx:
        tx.insert_dead_letters([letter])

    with pytest.raises(BrokerUnavailable):
        relay_once(services)
    backlog_while_refused = _backlog()
    oldest_while_refused = _backlog("moderation_outbox_oldest_age_seconds")
    services.publisher.refuses = lambda record: False
    relay_once(services)

    assert backlog_while_refused == {"task": 3, "dead_letter": 0}
    assert oldest_while_refused["task"] > 0 and oldest_while_refused["dead_letter"] == 0
    assert _backlog() == {"task": 0, "dead_letter": 0}
    assert _backlog("moderation_outbox_oldest_age_seconds") == {"task": 0, "dead_letter": 0}


def test_a_sweep_with_nothing_to_publish_counts_as_ok_not_failed(services):
    # An idle relay sweeps every second: counted as failures, a quiet outbox would look
    # like a broken relay to an alert on the failed sweeps.
    before = _outbox_metrics()

    assert relay_once(services) == 0

    after = _outbox_metrics()
    assert {name: after[name] - before[name] for name in after} == {
        ("sweeps", "task", "failed"): 0,
        ("sweeps", "task", "ok"): 1,
        ("sweeps", "dead_letter", "failed"): 0,
        ("sweeps", "dead_letter", "ok"): 1,
        ("published", "task"): 0,
        ("published", "dead_letter"): 0,
    }


def test_a_sweep_adds_every_row_it_published_to_the_published_count(services):
    # A sweep publishes a batch at once: the count is of rows, not of sweeps.
    services.publisher.refuses = lambda record: True
    for _ in range(3):
        submit_moderation_task(services, 1)  # accepted, their publish left to the relay
    services.publisher.refuses = lambda record: False
    before = _outbox_metrics()

    assert relay_once(services) == 3

    assert _outbox_metrics()["published", "task"] - before["published", "task"] == 3


def test_with_the_database_down_an_empty_backlog_stays_at_age_zero(services):
    # Nothing was waiting when last counted, so nothing can be growing older: an age
    # rising through the outage would fire the backlog alert for rows that do not exist.
    relay_once(services)
    services.db.unavailable_for = 10

    with pytest.raises(DatabaseUnavailable):
        relay_once(services)

    assert _backlog("moderation_outbox_oldest_age_seconds") == {"task": 0, "dead_letter": 0}


def _backlog(gauge: str = "moderation_outbox_backlog") -> dict[str, float | None]:
    return {
        kind: REGISTRY.get_sample_value(gauge, {"kind": kind}) for kind in ("task", "dead_letter")
    }


def _outbox_metrics() -> dict[tuple[str, ...], float]:
    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    counts = {}
    for kind in ("task", "dead_letter"):
        for result in ("failed", "ok"):
            counts["sweeps", kind, result] = value(
                "moderation_outbox_sweeps_total", kind=kind, result=result
            )
        counts["published", kind] = value("moderation_outbox_published_total", kind=kind)
    return counts


def test_a_bug_in_one_sweep_is_raised_over_an_outage_in_the_other(services, caplog):
    # During an outage of `moderation` the task sweep fails every time: a bug in the
    # letter sweep must still surface as a bug, not hide behind that outage.
    def broken(claim, *, older_than_s, limit):
        raise TypeError("a bug in the letter sweep")

    services.db.intercepts["claim_unpublished_dead_letters"] = broken
    services.publisher.refuses = lambda record: record.topic == "moderation"
    submit_moderation_task(services, 1)

    with pytest.raises(TypeError, match="a bug in the letter sweep"):
        relay_once(services)
    assert "another relay step failed too" in caplog.text


def test_a_stopping_process_does_not_start_the_letter_sweep_after_a_failed_task_sweep(
    services,
):
    # Its publish could outlast the shutdown's budget; the letters wait for the next start.
    services.publisher.refuses = lambda record: record.topic == "moderation"
    submit_moderation_task(services, 1)
    letter = DeadLetter(None, "moderation", 0, 7, b"k", b"not json", {"x-error-class": "permanent"})
    with services.db.transaction() as tx:
        tx.insert_dead_letters([letter])
    submit_moderation_task(services, 1, idempotency_key="expired")
    task_id, _ = services.db.state.idempotency_keys["expired"]
    services.db.state.idempotency_keys["expired"] = (task_id, datetime.now(UTC) - timedelta(1))
    services.stopping.set()

    with pytest.raises(BrokerUnavailable):
        relay_once(services)

    assert services.publisher.published == []
    assert services.db.state.letters_published == set()
    assert "expired" in services.db.state.idempotency_keys  # the purge waits too


def test_the_relay_purges_expired_keys_after_its_sweeps_even_when_one_failed(services):
    # Kafka refusing `moderation` says nothing of PostgreSQL: keys still expire.
    services.publisher.refuses = lambda record: record.topic == "moderation"
    submit_moderation_task(services, 1, idempotency_key="old")
    submit_moderation_task(services, 1, idempotency_key="young")
    task_id, _ = services.db.state.idempotency_keys["old"]
    expired_an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    services.db.state.idempotency_keys["old"] = (task_id, expired_an_hour_ago)

    with pytest.raises(BrokerUnavailable):
        relay_once(services)

    assert set(services.db.state.idempotency_keys) == {"young"}
    assert len(services.db.state.tasks) == 2


def test_a_bug_in_the_key_purge_is_raised_after_both_sweeps_ran(services):
    def broken(delete, *, limit):
        raise TypeError("a bug in the purge")

    services.db.intercepts["delete_expired_idempotency_keys"] = broken
    submit_moderation_task(services, 1)
    services.db.state.published.clear()  # as if its publish had not been acknowledged

    with pytest.raises(TypeError, match="a bug in the purge"):
        relay_once(services)
    assert len(services.publisher.published) == 2  # the task's first publish and the relay's


def test_a_pass_that_finds_the_database_down_gives_up_at_once_instead_of_once_a_step(services):
    # Each step would wait out its own connection timeout: 15 s to answer a scheduler's
    # call with the 503 the first one already knew.
    services.db.unavailable_for = 10
    transactions = services.db.transactions

    with pytest.raises(DatabaseUnavailable):
        relay_once(services)

    assert services.db.transactions - transactions == 1


def test_with_the_database_down_every_sweep_counts_as_failed_and_the_oldest_age_grows(services):
    # A sweep skipped for the outage published nothing; and the rows counted before it
    # cannot be published while it lasts, so their wait goes on, and an alert on it fires.
    services.publisher.refuses = lambda record: True
    task_id = submit_moderation_task(services, 1).task_id
    task = services.db.state.tasks[task_id]
    services.db.state.tasks[task_id] = replace(
        task, created_at=task.created_at - timedelta(minutes=5)
    )
    with pytest.raises(BrokerUnavailable):
        relay_once(services)
    counted = _backlog("moderation_outbox_oldest_age_seconds")["task"]
    before = _outbox_metrics()
    services.db.unavailable_for = 10

    with pytest.raises(DatabaseUnavailable):
        relay_once(services)

    after = _outbox_metrics()
    assert after["sweeps", "task", "failed"] - before["sweeps", "task", "failed"] == 1
    assert after["sweeps", "dead_letter", "failed"] - before["sweeps", "dead_letter", "failed"] == 1
    assert counted >= 300
    assert _backlog("moderation_outbox_oldest_age_seconds")["task"] > counted


@pytest.mark.parametrize(
    "count_error", [DatabaseUnavailable("PostgreSQL unavailable"), RuntimeError("a bug")]
)
def test_a_failed_count_after_a_pass_that_published_does_not_age_the_backlog(services, count_error):
    # The rows counted before may be the ones this pass just published: aged, the gauge
    # would climb for a backlog that is gone, and an alert would fire for nothing.
    services.publisher.refuses = lambda record: True
    task_id = submit_moderation_task(services, 1).task_id
    task = services.db.state.tasks[task_id]
    five_minutes_ago = task.created_at - timedelta(minutes=5)
    services.db.state.tasks[task_id] = replace(task, created_at=five_minutes_ago)
    with pytest.raises(BrokerUnavailable):
        relay_once(services)
    counted = _backlog("moderation_outbox_oldest_age_seconds")["task"]
    services.publisher.refuses = lambda record: False

    def failing(measure, *, older_than_s, cap):
        raise count_error

    services.db.intercepts["measure_unpublished_tasks"] = failing

    assert relay_once(services) == 1
    assert _backlog("moderation_outbox_oldest_age_seconds")["task"] == counted >= 300
