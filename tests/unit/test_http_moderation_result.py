"""`moderation_result`: a task's status read by its id, and ids refused.

The functions are called through functions-framework's test client, with fakes wired in."""

from __future__ import annotations

from datetime import datetime

import pytest

from shared.moderation.batch import process_moderation_batch
from tests.unit.consumer_records import accepted_task
from tests.unit.http_client import assert_json_error, client


def test_moderation_result_reports_a_pending_task(services):
    client("async_predict").post("/async_predict?item_id=1")

    response = client("moderation_result").get("/moderation_result/1")

    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "pending" and body["task_id"] == 1 and body["item_id"] == 1
    assert set(body) == {
        "task_id",
        "item_id",
        "status",
        "is_violation",
        "probability",
        "model_version",
        "error",
        "attempts",
        "created_at",
        "processed_at",
    }


def test_moderation_result_reports_a_completed_tasks_verdict_and_when_it_was_processed(
    services,
):
    # The time a verdict was reached is what a caller measures its wait by; the time the
    # task was accepted is a field of its own.
    process_moderation_batch(services, [accepted_task(services, 2)])
    [task] = services.db.state.tasks.values()

    body = client("moderation_result").get(f"/moderation_result/{task.id}").get_json()

    assert body["status"] == "completed" and body["model_version"] == "fake-model-1"
    assert body["is_violation"] is task.is_violation and body["error"] is None
    assert datetime.fromisoformat(body["processed_at"]) == task.processed_at
    assert datetime.fromisoformat(body["created_at"]) == task.created_at


def test_moderation_result_gives_the_same_body_on_repeated_reads(services):
    client("async_predict").post("/async_predict?item_id=1")
    reader = client("moderation_result")

    first, second = (reader.get("/moderation_result/1") for _ in range(2))

    assert first.status_code == second.status_code == 200
    assert first.get_json() == second.get_json()


def test_moderation_result_answers_404_for_an_unknown_task(services):
    response = client("moderation_result").get("/moderation_result/12345")

    assert assert_json_error(response, 404) == "Task not found"


@pytest.mark.parametrize("task_id", ["abc", "0", "-1", "1.5", str(2**63)])
def test_moderation_result_rejects_a_bad_task_id_with_422(services, task_id):
    response = client("moderation_result").get(f"/moderation_result/{task_id}")

    assert_json_error(response, 422)


@pytest.mark.parametrize(
    "path", ["/moderation_result/1/2", "/moderation_result/abc/2", "/x/y/2", "/other/2"]
)
def test_a_path_with_more_than_the_task_id_is_a_404_not_another_tasks_result(services, path):
    with services.db.transaction() as tx:
        tx.create_task_for_existing_ad(1)
        tx.create_task_for_existing_ad(1)

    response = client("moderation_result").get(path)

    assert assert_json_error(response, 404) == (
        "Not found: expected /moderation_result/{task_id}"
        " (or /{task_id} where the function is deployed on its own)"
    )


@pytest.mark.parametrize("path", ["/moderation_result/2", "/moderation_result/2/", "/2", "/2/"])
def test_a_task_id_is_read_from_the_route_or_alone(services, path):
    with services.db.transaction() as tx:
        tx.create_task_for_existing_ad(1)
        tx.create_task_for_existing_ad(1)

    response = client("moderation_result").get(path)

    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["task_id"] == 2


def test_a_task_id_that_is_not_plain_decimal_digits_is_a_422(services):
    with services.db.transaction() as tx:
        tx.create_task_for_existing_ad(1)

    response = client("moderation_result").get("/moderation_result/1.0")

    assert assert_json_error(response, 422)[0] == {
        "loc": ["task_id"],
        "msg": "expected a whole number in decimal digits, such as 42",
        "type": "value_error",
    }


def test_a_head_request_for_a_result_gets_its_status_and_no_body(services):
    with services.db.transaction() as tx:
        task_id = tx.create_task_for_existing_ad(1)

    result = client("moderation_result")
    response = result.head(f"/moderation_result/{task_id}")
    full = result.get(f"/moderation_result/{task_id}")

    # The headers of the GET, its JSON body's type and length included.
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.content_length == len(full.get_data()) > 0
