"""The consumer's batch handler against in-memory adapters: a batch scored and written.

Every rule, no I/O."""

from __future__ import annotations

import pytest

from shared.moderation.batch import process_moderation_batch
from tests.fakes import fake_services
from tests.unit.consumer_records import accepted_task


def test_valid_task_is_completed_with_the_models_verdict_and_nothing_dead_lettered():
    services = fake_services()
    record = accepted_task(services, 7, name="SPAM deal")

    report = process_moderation_batch(services, [record])

    task = services.db.state.tasks[1]
    assert (task.status, task.is_violation, task.probability) == ("completed", True, 0.9)
    assert task.model_version == "fake-model-1" and task.attempts == 1
    assert report.completed == 1 and report.dead_lettered == 0
    assert services.publisher.on_topic("moderation_dlq") == []


def test_a_whole_batch_is_scored_in_one_model_call_on_one_connection():
    services = fake_services()
    records = [accepted_task(services, item_id) for item_id in range(1, 51)]
    transactions_before = services.db.transactions

    process_moderation_batch(services, records)

    assert services.model.model.calls == [50]
    assert services.db.transactions - transactions_before == 1
    assert all(t.status == "completed" for t in services.db.state.tasks.values())


def test_the_same_task_twice_in_one_batch_is_scored_once_and_counted_as_a_duplicate():
    services = fake_services()
    first, second = accepted_task(services, 1), accepted_task(services, 2)
    again = first._replace(offset=99)  # republished by the relay, say

    report = process_moderation_batch(services, [first, second, again])

    assert services.model.model.calls == [2]
    assert (report.completed, report.duplicates, report.dead_lettered) == (2, 1, 0)
    assert services.db.state.tasks[1].attempts == 1


def test_an_intercept_of_a_name_the_transactions_lack_is_refused():
    # Else a typo would leave a test without the fault it is about, and passing.
    services = fake_services()

    with pytest.raises(KeyError, match="no method 'load_task_with_ads'"):
        services.db.intercepts["load_task_with_ads"] = lambda read, tasks: read(tasks)
    with pytest.raises(KeyError, match="no method 'state'"):
        services.db.intercepts["state"] = lambda state: state
