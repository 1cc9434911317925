"""`async_predict`: tasks accepted, refused, and made once per Idempotency-Key.

The functions are called through functions-framework's test client, with fakes wired in."""

from __future__ import annotations

import pytest

from shared.domain import Ad
from tests.unit.http_client import assert_json_error, client


def test_async_predict_accepts_a_task_with_202_and_its_location(services):
    response = client("async_predict").post("/async_predict?item_id=1")

    assert response.status_code == 202
    body = response.get_json()
    assert body == {"task_id": 1, "status": "pending", "message": "Moderation request accepted"}
    assert response.headers["Location"] == "/moderation_result/1"
    (published,) = services.publisher.on_topic("moderation")
    assert (published.key, published.value) == (b"1", b'{"task_id":1,"item_id":1}')
    # Marked published once the broker has it: the relay leaves it alone.
    assert services.db.state.published == {1}


def test_async_predict_for_an_unknown_ad_answers_404_and_creates_nothing(services):
    response = client("async_predict").post("/async_predict?item_id=999")

    assert assert_json_error(response, 404) == "Ad not found"
    assert services.db.state.tasks == {}
    assert services.publisher.published == []


def test_async_predict_still_accepts_when_kafka_is_down_and_leaves_the_task_to_the_relay(
    services,
):
    services.publisher.fail_times = 1

    response = client("async_predict").post("/async_predict?item_id=1")

    assert response.status_code == 202
    assert services.db.state.tasks[1].status == "pending"
    assert services.db.state.published == set()


def test_a_retry_with_the_same_idempotency_key_gets_the_same_task_and_publishes_nothing(services):
    key = {"Idempotency-Key": "3f0c2a6e-8d1b-4f5e-9a7c-2b6d1e0f4a11"}

    first = client("async_predict").post("/async_predict?item_id=1", headers=key)
    retry = client("async_predict").post("/async_predict?item_id=1", headers=key)

    assert (first.status_code, retry.status_code) == (202, 202)
    assert first.get_json() == retry.get_json()
    assert retry.headers["Location"] == first.headers["Location"]
    assert "Idempotent-Replayed" not in first.headers
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert len(services.db.state.tasks) == 1
    assert len(services.publisher.on_topic("moderation")) == 1


def test_whitespace_around_an_idempotency_key_is_not_part_of_it(services):
    # gunicorn drops it, werkzeug's server (the runner's) keeps it: one key either way.
    key = "3f0c2a6e-8d1b-4f5e-9a7c-2b6d1e0f4a11"

    first = client("async_predict").post(
        "/async_predict?item_id=1", headers={"Idempotency-Key": key}
    )
    retry = client("async_predict").post(
        "/async_predict?item_id=1", environ_overrides={"HTTP_IDEMPOTENCY_KEY": f" {key} \t"}
    )

    assert (first.status_code, retry.status_code) == (202, 202), retry.get_data(as_text=True)
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert len(services.db.state.tasks) == 1


def test_an_idempotency_key_header_sent_twice_is_told_why_its_value_has_a_comma(services):
    # A WSGI server joins a repeated header's values with commas before any code sees it.
    response = client("async_predict").post(
        "/async_predict?item_id=1", environ_overrides={"HTTP_IDEMPOTENCY_KEY": "r1, r1"}
    )

    [issue] = assert_json_error(response, 422)
    assert "a header sent twice arrives as one, its values joined by commas" in issue["msg"]
    assert services.db.state.tasks == {}


def test_with_api_keys_each_caller_has_its_own_idempotency_keys(services):
    services.settings = services.settings.model_copy(update={"api_keys": "k1,k2"})
    services.db.add_ad(Ad(2, 1, False, "Chair", "A chair", 3, 1))
    idempotency = {"Idempotency-Key": "order-17"}  # a key two clients may both pick

    def submit(api_key: str, item_id: int):
        headers = {**idempotency, "X-API-Key": api_key}
        return client("async_predict").post(f"/async_predict?item_id={item_id}", headers=headers)

    first = submit("k1", 1)
    other_client_same_ad = submit("k2", 1)
    other_client_other_ad = submit("k2", 2)
    retry = submit("k1", 1)

    assert [r.status_code for r in (first, other_client_same_ad, retry)] == [202, 202, 202]
    # Another client's key neither hands it the first client's task nor refuses its ad.
    assert other_client_same_ad.get_json()["task_id"] != first.get_json()["task_id"]
    assert "Idempotent-Replayed" not in other_client_same_ad.headers
    assert assert_json_error(other_client_other_ad, 422) == (
        "This Idempotency-Key was used for another ad; use a new key"
    )
    assert retry.get_json() == first.get_json() and retry.headers["Idempotent-Replayed"] == "true"
    assert len(services.db.state.tasks) == 2
    # What the database holds names the caller by a digest, never by its API key.
    stored_keys = list(services.db.state.idempotency_keys)
    assert len(stored_keys) == 2 and all(key.endswith(",order-17") for key in stored_keys)
    assert not any("k1" in key or "k2" in key for key in stored_keys)


def test_an_idempotency_key_reused_for_another_ad_is_a_422_and_creates_nothing(services):
    services.db.add_ad(Ad(2, 1, False, "Chair", "A chair", 3, 1))
    key = {"Idempotency-Key": "order-17"}
    client("async_predict").post("/async_predict?item_id=1", headers=key)

    response = client("async_predict").post("/async_predict?item_id=2", headers=key)

    detail = assert_json_error(response, 422)
    assert detail == "This Idempotency-Key was used for another ad; use a new key"
    assert len(services.db.state.tasks) == 1


def test_requests_without_an_idempotency_key_each_make_a_task(services):
    first = client("async_predict").post("/async_predict?item_id=1")
    second = client("async_predict").post("/async_predict?item_id=1")

    assert first.get_json()["task_id"] != second.get_json()["task_id"]


@pytest.mark.parametrize("key", ["", "has space", "x" * 256, "ключ", "sent,twice"])
def test_an_idempotency_key_that_is_not_1_to_255_visible_ascii_characters_is_a_422(services, key):
    response = client("async_predict").post(
        "/async_predict?item_id=1", headers={"Idempotency-Key": key}
    )

    detail = assert_json_error(response, 422)
    assert detail[0]["loc"] == ["Idempotency-Key"]
    if key and len(key) <= 255:  # a length has pydantic's own message
        assert detail[0]["msg"].startswith("expected visible ASCII characters (a UUID, say)")
    assert services.db.state.tasks == {}


def test_a_bad_item_id_and_a_bad_idempotency_key_are_both_named_in_one_422(services):
    response = client("async_predict").post(
        "/async_predict?item_id=abc", headers={"Idempotency-Key": "has space"}
    )

    detail = assert_json_error(response, 422)
    assert [error["loc"] for error in detail] == [["item_id"], ["Idempotency-Key"]]
    assert services.db.state.tasks == {}


def test_an_item_id_given_twice_is_a_422_and_creates_nothing(services):
    for target, folder in (("async_predict", "async_predict"), ("simple_predict", "predict")):
        response = client(target, folder).post("/?item_id=1&item_id=2")

        detail = assert_json_error(response, 422)
        assert detail == [
            {"loc": ["item_id"], "msg": "given 2 times; give it once", "type": "repeated"}
        ]
    assert services.db.state.tasks == {}


def test_a_publish_failing_unexpectedly_after_the_commit_still_answers_202(services):
    def broken(records):
        raise RuntimeError("producer misconfigured")

    services.publisher.publish = broken

    response = client("async_predict").post("/", query_string={"item_id": "1"})

    # The task is durable and unpublished, so the relay publishes it; a 500 would have
    # told the caller nothing of it, and its retry would have made a second task.
    assert response.status_code == 202, response.get_data(as_text=True)
    task_id = response.get_json()["task_id"]
    assert list(services.db.state.tasks) == [task_id]
    with services.db.transaction() as tx:
        assert [task for task, _ in tx.claim_unpublished_tasks(older_than_s=0, limit=10)] == [
            task_id
        ]


def test_a_callers_idempotency_keys_follow_its_api_key_not_a_platform_token_beside_it(services):
    services.settings = services.settings.model_copy(update={"api_keys": "k1,k2"})

    def submit(headers: dict[str, str]):
        headers = {"Idempotency-Key": "order-18", **headers}
        return client("async_predict").post("/async_predict?item_id=1", headers=headers)

    first = submit({"X-API-Key": "k1"})
    # The same caller again, now behind a platform that adds a token of its own, which
    # changes with every request.
    retry = submit({"X-API-Key": "k1", "Authorization": "Bearer platform-token-2"})

    assert retry.status_code == 202 and retry.headers["Idempotent-Replayed"] == "true"
    assert retry.get_json() == first.get_json()
    assert len(services.db.state.tasks) == 1
