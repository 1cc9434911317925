"""`outbox_relay` as a function: its sweeps of unpublished tasks, per call.

The functions are called through functions-framework's test client, with fakes wired in."""

from __future__ import annotations

import json

from tests.unit.http_client import assert_json_error, client


def _relay_without_grace(services) -> None:
    # The relay leaves alone a task younger than OUTBOX_GRACE_S, whose own publish may
    # still be on its way; these tests are about a task past it.
    services.settings = services.settings.model_copy(update={"outbox_grace_s": 0})


def test_outbox_relay_publishes_a_task_whose_publish_was_never_acknowledged(services):
    _relay_without_grace(services)
    with services.db.transaction() as tx:
        task_id = tx.create_task_for_existing_ad(1)  # no publish marked: left to the relay

    response = client("outbox_relay").post("/")

    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json() == {"published": 1}
    (record,) = services.publisher.on_topic("moderation")
    assert json.loads(record.value) == {"task_id": task_id, "item_id": 1}


def test_outbox_relay_sweeps_again_while_a_sweep_finds_a_full_batch(services):
    # Called as seldom as once a minute, one sweep a call would drain a backlog at a batch
    # a minute.
    _relay_without_grace(services)
    services.settings = services.settings.model_copy(update={"outbox_batch_size": 2})
    with services.db.transaction() as tx:
        task_ids = [tx.create_task_for_existing_ad(1) for _ in range(5)]

    response = client("outbox_relay").post("/")

    assert response.get_json() == {"published": 5}
    published = [json.loads(record.value)["task_id"] for record in services.publisher.published]
    assert sorted(published) == task_ids


def test_outbox_relay_stops_sweeping_a_backlog_when_its_budget_is_spent(services):
    _relay_without_grace(services)
    services.settings = services.settings.model_copy(
        update={"outbox_batch_size": 2, "outbox_relay_call_budget_s": 1e-9}
    )
    with services.db.transaction() as tx:
        for _ in range(5):
            tx.create_task_for_existing_ad(1)

    response = client("outbox_relay").post("/")

    # One sweep, then the budget is gone: the rest waits for the next call.
    assert response.get_json() == {"published": 2}
    assert len(services.publisher.published) == 2


def test_outbox_relay_leaves_alone_a_task_younger_than_the_grace_period(services):
    with services.db.transaction() as tx:
        tx.create_task_for_existing_ad(1)  # just created: its own publish may be on its way

    response = client("outbox_relay").post("/")

    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json() == {"published": 0}
    assert services.publisher.on_topic("moderation") == []


def test_outbox_relay_answers_503_with_retry_after_while_kafka_is_down(services):
    _relay_without_grace(services)
    with services.db.transaction() as tx:
        tx.create_task_for_existing_ad(1)
    services.publisher.fail_times = 1

    response = client("outbox_relay").post("/")

    assert "retry later" in assert_json_error(response, 503)
    assert response.headers["Retry-After"] == "5"
    assert services.publisher.on_topic("moderation") == []


def test_outbox_relay_takes_only_posts_and_checks_api_keys(services):
    services.settings = services.settings.model_copy(update={"api_keys": "k1"})

    refused = client("outbox_relay").post("/")
    wrong_method = client("outbox_relay").get("/", headers={"X-API-Key": "k1"})
    allowed = client("outbox_relay").post("/", headers={"X-API-Key": "k1"})

    assert_json_error(refused, 401)
    assert assert_json_error(wrong_method, 405) == "Method GET not allowed; use POST"
    assert allowed.status_code == 200, allowed.get_data(as_text=True)
