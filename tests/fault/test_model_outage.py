"""The model unavailable for some attempts, or for all of them, while tasks flow through
async_predict, Kafka and the poll loop."""

from __future__ import annotations

import time

import pytest
from functions_framework import create_app

from tests.fakes import ModelUnavailableAtFirst, RecordingSleep
from tests.fault.load import dead_letter_rows
from tests.integration.database_rows import seed_ads, task_rows
from tests.integration.kafka_records import read_topic, records_on
from tests.integration.wiring import running_consumer, wired_services
from tests.waiting import wait_until

pytestmark = [pytest.mark.fault, pytest.mark.integration]


def _submit(item_id: int) -> int:
    client = create_app("async_predict", "functions/async_predict/main.py").test_client()
    response = client.post(f"/async_predict?item_id={item_id}")
    assert response.status_code == 202, response.get_data(as_text=True)
    return response.get_json()["task_id"]


def _result(task_id: int) -> dict:
    client = create_app("moderation_result", "functions/moderation_result/main.py").test_client()
    response = client.get(f"/moderation_result/{task_id}")
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def _finished(services) -> bool:
    rows = task_rows(services)
    return bool(rows) and all(row[2] != "pending" for row in rows)


def _headers(message) -> dict[str, str]:
    return {name: value.decode() for name, value in message.headers() or []}


class WaitedOut(RecordingSleep):
    """Records each wait of the retry schedule and waits it out (the tests' are short)."""

    def __call__(self, seconds: float) -> None:
        super().__call__(seconds)
        time.sleep(seconds)


def test_model_unavailable_for_the_first_two_attempts_is_retried_and_completed_without_dlq(
    settings,
):
    with wired_services(settings) as services:
        services.model = ModelUnavailableAtFirst(services.model, failures=2)
        services.sleeper = waits = WaitedOut()
        (item_id,) = seed_ads(services, 1)
        task_id = _submit(item_id)

        with running_consumer(services):
            wait_until(lambda: _finished(services), timeout_s=30, what="the task finished")

        result = _result(task_id)
        assert result["status"] == "completed", result
        assert result["attempts"] == 3 and result["error"] is None
        assert result["model_version"].startswith("moderation-")
        assert services.model.outage.loads == 3
        # The schedule's first two waits (5 and 10 s by default; base 0.01 s here).
        base = settings.retry_base_delay_s
        assert waits.waits == [base, 2 * base]
        assert dead_letter_rows(services) == 0
        assert records_on(settings, settings.kafka_dlq_topic) == 0


def test_model_unavailable_for_all_four_attempts_fails_the_task_with_one_dlq_record(settings):
    with wired_services(settings) as services:
        services.model = ModelUnavailableAtFirst(services.model, failures=1000)
        services.sleeper = waits = WaitedOut()
        (item_id,) = seed_ads(services, 1)
        task_id = _submit(item_id)

        with running_consumer(services):
            wait_until(lambda: _finished(services), timeout_s=30, what="the task finished")
            letters = read_topic(settings, settings.kafka_dlq_topic, expected=1, timeout_s=20)

        result = _result(task_id)
        assert result["status"] == "failed" and result["attempts"] == 4, result
        assert result["error"] == "gave up after 4 attempts: the model is unavailable"
        assert services.model.outage.loads == 4
        # The whole schedule (5, 10 and 20 s by default; base 0.01 s here), then no more.
        base = settings.retry_base_delay_s
        assert waits.waits == [base, 2 * base, 4 * base]
        (letter,) = letters
        assert dead_letter_rows(services) == 1
        headers = _headers(letter)
        assert headers["x-attempts"] == "4"
        assert headers["x-error-class"] == "exhausted"
        assert headers["x-exception-type"] == "ModelUnavailable"
        assert headers["x-task-id"] == str(task_id)
        assert "model unavailable" in headers["x-exception-message"]
