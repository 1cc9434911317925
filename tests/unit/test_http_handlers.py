"""The HTTP functions called through functions-framework's test client, with fakes wired in."""

from __future__ import annotations

import hashlib
import io
import json

import pytest
from functions_framework import create_app

from shared.bootstrap import install_services
from shared.domain import Ad, Verdict
from shared.model.validation import validate_ads
from shared.settings import get_settings
from tests.fakes import VALID_AD, FakeModel, FakeModelLoader


def client(target: str, folder: str | None = None):
    source = f"functions/{folder or target}/main.py"
    return create_app(target, source).test_client()


def _assert_json_error(response, status: int) -> object:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    return response.get_json()["detail"]


def test_predict_returns_the_verdict_with_the_model_version(services):
    response = client("predict").post("/predict", json=VALID_AD)

    assert response.status_code == 200
    assert response.get_json() == {
        "item_id": 10,
        "is_violation": False,
        "probability": 0.1,
        "model_version": "fake-model-1",
    }


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"seller_id": "abc"}, "seller_id"),
        ({"is_verified_seller": "maybe"}, "is_verified_seller"),
        ({"is_verified_seller": 1}, "is_verified_seller"),
        ({"images_qty": 11}, "images_qty"),
        ({"images_qty": -1}, "images_qty"),
        ({"item_id": 0}, "item_id"),
        ({"item_id": 2**63}, "item_id"),
        ({"category": "3"}, "category"),
        ({"name": 5}, "name"),
        ({"images_qty": 2.5}, "images_qty"),
    ],
)
def test_predict_rejects_each_bad_field_with_422_naming_it(services, change, field):
    response = client("predict").post("/predict", json={**VALID_AD, **change})

    detail = _assert_json_error(response, 422)
    assert [issue["loc"] for issue in detail] == [[field]]


def test_predict_lists_every_missing_field(services):
    response = client("predict").post("/predict", json={"item_id": 1})

    detail = _assert_json_error(response, 422)
    missing = {issue["loc"][0] for issue in detail}
    assert missing == set(VALID_AD) - {"item_id"}


def test_predict_lists_twenty_problems_of_a_body_then_how_many_more(services):
    body = {**VALID_AD, **{f"u{n}": 0 for n in range(20_000)}}  # within the body limit

    response = client("predict").post("/predict", json=body)

    detail = _assert_json_error(response, 422)
    assert len(detail) == 21
    assert all(issue["type"] == "extra_forbidden" for issue in detail[:20])
    assert detail[0]["loc"] == ["u0"]
    assert detail[20] == {"loc": [], "msg": "and 19980 more errors", "type": "too_many_errors"}


def test_predict_lists_a_few_unknown_fields_with_the_other_problems(services):
    body = {**VALID_AD, "images_qty": "two", "colour": "red"}

    response = client("predict").post("/predict", json=body)

    detail = _assert_json_error(response, 422)
    assert sorted(issue["loc"][0] for issue in detail) == ["colour", "images_qty"]


def test_predict_refuses_a_field_given_twice_in_the_body_with_422(services):
    # A parser that keeps the first value (a proxy, an audit log) would read another ad.
    body = json.dumps(VALID_AD)[:-1] + ', "item_id": 999, "item_id": 998}'

    response = client("predict").post("/predict", data=body, content_type="application/json")

    detail = _assert_json_error(response, 422)
    repeated = {"loc": ["item_id"], "msg": "given 3 times; give it once", "type": "repeated"}
    assert detail == [repeated]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        # Not JSON (a stray brace) is a 400 first, whatever names repeat in it.
        (json.dumps(VALID_AD)[:-1] + ', "category": 2}}', 400),
        # A repeat inside a field's value is that field's error, not a repeated field.
        (json.dumps({**VALID_AD, "category": "X"}).replace('"X"', '{"a": 1, "a": 2}'), 422),
    ],
)
def test_a_repeated_name_is_refused_only_in_the_bodys_own_object_once_it_parsed(
    services, body, status
):
    response = client("predict").post("/predict", data=body, content_type="application/json")

    detail = _assert_json_error(response, status)
    if status == 422:
        assert [issue["loc"] for issue in detail] == [["category"]]


def test_predict_rejects_a_body_that_is_not_json_with_400(services):
    response = client("predict").post(
        "/predict", data=b"{not json", content_type="application/json"
    )

    assert "not valid JSON" in _assert_json_error(response, 400)


def test_predict_rejects_json_nested_too_deeply_with_400(services):
    nested = b"[" * 30_000 + b"]" * 30_000  # within the body limit, past the parser's stack

    response = client("predict").post("/predict", data=nested, content_type="application/json")

    assert "nested too deeply" in _assert_json_error(response, 400)


def test_predict_rejects_another_content_type_with_415(services):
    response = client("predict").post("/predict", data="a=1", content_type="text/plain")

    assert "application/json" in _assert_json_error(response, 415)


def test_predict_rejects_a_body_over_the_limit_with_413(services):
    body = {**VALID_AD, "description": "x" * services.settings.max_body_bytes}

    response = client("predict").post("/predict", json=body)

    _assert_json_error(response, 413)


def test_the_largest_valid_ad_fits_the_body_limit_in_any_json_encoding(services):
    # Characters outside the BMP, escaped as surrogate pairs: 12 bytes each, the most
    # any JSON encoder spends on one character.
    largest = {**VALID_AD, "name": "\U0001f600" * 1_000, "description": "\U0001f600" * 20_000}
    body = json.dumps(largest, ensure_ascii=True)

    response = client("predict").post("/predict", data=body, content_type="application/json")

    assert len(body) > 250_000
    assert response.status_code == 200, response.get_data(as_text=True)[:300]


def _chunked_post(target: str, folder: str, body: bytes):
    """A body with no Content-Length, as gunicorn hands over a chunked one."""
    return client(target, folder).post(
        "/",
        input_stream=io.BytesIO(body),
        headers={"Transfer-Encoding": "chunked", "Content-Type": "application/json"},
        environ_overrides={"wsgi.input_terminated": True},
    )


class _CountingStream(io.RawIOBase):
    """A request body of `size` bytes that counts how much of it was read."""

    def __init__(self, size: int) -> None:
        self.size, self.position, self.taken = size, 0, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:  # werkzeug's test client measures the stream first
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self.position = offset + (self.size if whence == io.SEEK_END else 0)
        return self.position

    def tell(self) -> int:
        return self.position

    def readinto(self, buffer) -> int:
        count = max(0, min(len(buffer), self.size - self.position))
        buffer[:count] = b" " * count
        self.position += count
        self.taken += count
        return count


def test_a_body_declared_over_the_limit_is_refused_without_being_read(services):
    body = _CountingStream(10 * 1024 * 1024)

    response = client("predict").post(
        "/predict",
        input_stream=body,
        headers={"Content-Length": str(body.size), "Content-Type": "application/json"},
        environ_overrides={"wsgi.input_terminated": True},
    )

    assert f"over {services.settings.max_body_bytes}" in _assert_json_error(response, 413)
    assert body.taken == 0


def test_a_chunked_body_over_the_limit_is_rejected_with_413(services):
    body = json.dumps({**VALID_AD, "description": "x" * services.settings.max_body_bytes}).encode()

    _assert_json_error(_chunked_post("predict", "predict", body), 413)


def test_a_chunked_body_within_the_limit_is_read_in_full(services):
    # Padded to exactly the limit, which is still allowed.
    body = json.dumps(VALID_AD).encode()
    body += b" " * (services.settings.max_body_bytes - len(body))
    response = _chunked_post("predict", "predict", body)

    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["item_id"] == VALID_AD["item_id"]


def test_predict_answers_503_with_retry_after_when_the_model_is_unavailable(services):
    services.model = FakeModelLoader(fail_times=1)

    response = client("predict").post("/predict", json=VALID_AD)

    # Which dependency, and nothing of the error itself (paths, buckets, versions).
    detail = _assert_json_error(response, 503)
    assert detail == "Temporarily unavailable, retry later: the model is unavailable"
    assert response.headers["Retry-After"] == "5"


def test_a_503_is_logged_with_its_route_and_the_item_it_was_for(services, caplog):
    services.db.unavailable_for = 1

    response = client("simple_predict", "predict").post("/simple_predict?item_id=7")

    assert response.status_code == 503
    (logged,) = [r for r in caplog.records if r.getMessage() == "temporarily unavailable"]
    assert (logged.route, logged.path) == ("simple_predict", "/simple_predict?item_id=7")


def test_predict_refuses_get_with_405(services):
    _assert_json_error(client("predict").get("/predict"), 405)


def test_simple_predict_scores_the_stored_ad(services):
    response = client("simple_predict", "predict").post("/simple_predict?item_id=1")

    assert response.status_code == 200
    assert response.get_json()["is_violation"] is True


def test_simple_predict_answers_404_for_an_unknown_ad(services):
    response = client("simple_predict", "predict").post("/simple_predict?item_id=999")

    assert _assert_json_error(response, 404) == "Ad not found"


class _ValidatingModel(FakeModel):
    """Refuses what the real model refuses, with the real model's validation."""

    def predict(self, ads: list[Ad]) -> list[Verdict]:
        validate_ads(ads)
        return super().predict(ads)


def test_simple_predict_answers_422_for_a_stored_ad_the_model_cannot_score(services):
    services.model = FakeModelLoader(_ValidatingModel())
    services.db.add_ad(Ad(2, 1, False, "Chair", "A chair", -5, 0))  # ads.category has no CHECK

    response = client("simple_predict", "predict").post("/simple_predict?item_id=2")

    detail = _assert_json_error(response, 422)
    assert "cannot be scored" in detail and "category" in detail


@pytest.mark.parametrize("item_id", ["", "abc", "1.5", "0", "-1", str(2**63), "1e3"])
def test_simple_predict_rejects_a_bad_item_id_with_422(services, item_id):
    query = "" if item_id == "" else f"?item_id={item_id}"

    response = client("simple_predict", "predict").post(f"/simple_predict{query}")

    _assert_json_error(response, 422)


def test_async_predict_accepts_a_task_with_202_and_its_location(services):
    response = client("async_predict").post("/async_predict?item_id=1")

    assert response.status_code == 202
    body = response.get_json()
    assert body == {"task_id": 1, "status": "pending", "message": "Moderation request accepted"}
    assert response.headers["Location"] == "/moderation_result/1"
    (published,) = services.publisher.on_topic("moderation")
    assert (published.key, published.value) == (b"1", b'{"task_id":1,"item_id":1}')


def test_async_predict_for_an_unknown_ad_answers_404_and_creates_nothing(services):
    response = client("async_predict").post("/async_predict?item_id=999")

    assert _assert_json_error(response, 404) == "Ad not found"
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


def test_moderation_result_gives_the_same_body_on_repeated_reads(services):
    client("async_predict").post("/async_predict?item_id=1")
    reader = client("moderation_result")

    first, second = (reader.get("/moderation_result/1") for _ in range(2))

    assert first.status_code == second.status_code == 200
    assert first.get_json() == second.get_json()


def test_moderation_result_answers_404_for_an_unknown_task(services):
    response = client("moderation_result").get("/moderation_result/12345")

    assert _assert_json_error(response, 404) == "Task not found"


@pytest.mark.parametrize("task_id", ["abc", "0", "-1", "1.5", str(2**63)])
def test_moderation_result_rejects_a_bad_task_id_with_422(services, task_id):
    response = client("moderation_result").get(f"/moderation_result/{task_id}")

    _assert_json_error(response, 422)


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer no"}])
def test_with_api_keys_set_a_missing_or_wrong_key_gets_401(services, headers):
    services.settings = services.settings.model_copy(update={"api_keys": "k1,k2"})

    response = client("predict").post("/predict", json=VALID_AD, headers=headers)

    _assert_json_error(response, 401)


@pytest.mark.parametrize("headers", [{"X-API-Key": "k2"}, {"Authorization": "Bearer k1"}])
def test_with_api_keys_set_either_header_form_is_accepted(services, headers):
    services.settings = services.settings.model_copy(update={"api_keys": "k1,k2"})

    response = client("predict").post("/predict", json=VALID_AD, headers=headers)

    assert response.status_code == 200


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

    assert "retry later" in _assert_json_error(response, 503)
    assert response.headers["Retry-After"] == "5"
    assert services.publisher.on_topic("moderation") == []


@pytest.mark.parametrize(
    "body",
    [b'{"item_id": ' + b"1" * 4301 + b"}", b'{"item_id": NaN}', b'{"category": Infinity}'],
    ids=["integer-past-python-digit-limit", "NaN", "Infinity"],
)
def test_predict_answers_400_for_json_python_reads_but_json_does_not_allow(services, body):
    response = client("predict").post("/predict", data=body, content_type="application/json")

    detail = _assert_json_error(response, 400)
    assert "not valid JSON" in detail
    assert "sys." not in detail  # no advice only the server's own code could follow


@pytest.mark.parametrize("terminated", [False, True], ids=["werkzeug-limit", "gunicorn-stream"])
def test_a_body_shorter_than_its_declared_length_gets_a_json_400(services, terminated):
    # A server that ends the input stream itself (gunicorn) hands over the short body
    # without an error; werkzeug's own limit raises one.
    overrides = {"wsgi.input_terminated": True} if terminated else {}
    response = client("predict").post("/predict", **_short_body(**overrides))

    assert "could not be read" in _assert_json_error(response, 400)


class _ResetMidBody(io.BytesIO):
    """The first bytes of a body, then the connection resets, as a socket read would."""

    def __init__(self) -> None:
        super().__init__(b'{"a": 1')

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0 or self.tell() == len(self.getvalue()):
            # gunicorn's whole-body read loops over recv(): the reset ends all of it.
            raise ConnectionResetError(104, "Connection reset by peer")
        return super().read(size)

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


@pytest.mark.parametrize(
    ("target", "folder"), [("predict", "predict"), ("moderation_consumer", None)]
)
@pytest.mark.parametrize("terminated", [False, True], ids=["werkzeug-limit", "gunicorn-stream"])
def test_a_connection_reset_mid_body_is_a_json_400_not_a_crash(
    services, target, folder, terminated
):
    overrides = {"CONTENT_LENGTH": "100", **({"wsgi.input_terminated": True} if terminated else {})}

    response = client(target, folder).post(
        "/",
        input_stream=_ResetMidBody(),
        content_type="application/json",
        environ_overrides=overrides,
    )

    assert "could not be read" in _assert_json_error(response, 400)


def test_a_json_body_opening_with_a_byte_order_mark_is_read(services):
    body = b"\xef\xbb\xbf" + json.dumps(VALID_AD).encode()

    response = client("predict").post("/predict", data=body, content_type="application/json")

    assert response.status_code == 200, response.get_data(as_text=True)


def _short_body(**overrides) -> dict:
    """A request body shorter than its declared length."""
    return {
        "input_stream": io.BytesIO(b'{"a": 1'),
        "content_type": "application/json",
        "environ_overrides": {"CONTENT_LENGTH": "100", **overrides},
    }


def test_a_refusal_before_the_body_is_read_keeps_its_status_with_a_short_body(services):
    services.settings = services.settings.model_copy(update={"api_keys": "k1"})

    unauthorised = client("predict").post("/predict", **_short_body())
    wrong_method = client("predict").put("/predict", **_short_body(HTTP_X_API_KEY="k1"))

    _assert_json_error(unauthorised, 401)
    _assert_json_error(wrong_method, 405)


@pytest.mark.parametrize("item_id", ["1_000", "+1", " 1 ", "10.000", "1e3", "٣"])
def test_an_item_id_that_is_not_plain_decimal_digits_is_a_422(services, item_id):
    # int() reads `1_000` and `+1`, pydantic's lax int `10.000`: each would name another
    # ad, or the right one by accident, instead of telling the caller about the typo.
    for target, folder in (("async_predict", "async_predict"), ("simple_predict", "predict")):
        response = client(target, folder).post("/", query_string={"item_id": item_id})

        detail = _assert_json_error(response, 422)
        assert "decimal digits" in detail[0]["msg"]
    assert services.db.state.tasks == {}


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
    assert _assert_json_error(other_client_other_ad, 422) == (
        "This Idempotency-Key was used for another ad; use a new key"
    )
    assert retry.get_json() == first.get_json() and retry.headers["Idempotent-Replayed"] == "true"
    assert len(services.db.state.tasks) == 2
    # What the database holds names the caller by a digest, never by its API key.
    stored_keys = list(services.db.state.idempotency_keys)
    assert len(stored_keys) == 2 and all(key.endswith(",order-17") for key in stored_keys)
    assert not any("k1" in key or "k2" in key for key in stored_keys)


def test_a_key_sent_while_the_api_was_open_is_never_a_callers_key_once_keys_are_set(services):
    services.db.add_ad(Ad(2, 1, False, "Chair", "A chair", 3, 1))
    digest = hashlib.sha256(b"k1").hexdigest()[:16]
    # While the API is open, someone sends a key shaped as the caller's stored form.
    planted = {"Idempotency-Key": f"{digest}:order-17"}
    planting = client("async_predict").post("/async_predict?item_id=2", headers=planted)
    assert planting.status_code == 202
    services.settings = services.settings.model_copy(update={"api_keys": "k1"})

    response = client("async_predict").post(
        "/async_predict?item_id=1", headers={"Idempotency-Key": "order-17", "X-API-Key": "k1"}
    )

    assert response.status_code == 202 and "Idempotent-Replayed" not in response.headers
    assert len(services.db.state.tasks) == 2


def test_an_idempotency_key_reused_for_another_ad_is_a_422_and_creates_nothing(services):
    services.db.add_ad(Ad(2, 1, False, "Chair", "A chair", 3, 1))
    key = {"Idempotency-Key": "order-17"}
    client("async_predict").post("/async_predict?item_id=1", headers=key)

    response = client("async_predict").post("/async_predict?item_id=2", headers=key)

    detail = _assert_json_error(response, 422)
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

    detail = _assert_json_error(response, 422)
    assert detail[0]["loc"] == ["Idempotency-Key"]
    if key and len(key) <= 255:  # a length has pydantic's own message
        assert "visible ASCII characters (a UUID, say) and no comma" in detail[0]["msg"]
    assert services.db.state.tasks == {}


def test_a_bad_item_id_and_a_bad_idempotency_key_are_both_named_in_one_422(services):
    response = client("async_predict").post(
        "/async_predict?item_id=abc", headers={"Idempotency-Key": "has space"}
    )

    detail = _assert_json_error(response, 422)
    assert [error["loc"] for error in detail] == [["item_id"], ["Idempotency-Key"]]
    assert services.db.state.tasks == {}


def test_an_item_id_given_twice_is_a_422_and_creates_nothing(services):
    for target, folder in (("async_predict", "async_predict"), ("simple_predict", "predict")):
        response = client(target, folder).post("/?item_id=1&item_id=2")

        detail = _assert_json_error(response, 422)
        assert detail == [
            {"loc": ["item_id"], "msg": "given 2 times; give it once", "type": "repeated"}
        ]
    assert services.db.state.tasks == {}


@pytest.mark.parametrize(
    "path", ["/moderation_result/1/2", "/moderation_result/abc/2", "/x/y/2", "/other/2"]
)
def test_a_path_with_more_than_the_task_id_is_a_404_not_another_tasks_result(services, path):
    with services.db.transaction() as tx:
        tx.create_task_for_existing_ad(1)
        tx.create_task_for_existing_ad(1)

    response = client("moderation_result").get(path)

    assert "expected /moderation_result/{task_id}" in _assert_json_error(response, 404)


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

    assert "decimal digits" in _assert_json_error(response, 422)[0]["msg"]


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


def test_outbox_relay_takes_only_posts_and_checks_api_keys(services):
    services.settings = services.settings.model_copy(update={"api_keys": "k1"})

    refused = client("outbox_relay").post("/")
    wrong_method = client("outbox_relay").get("/", headers={"X-API-Key": "k1"})
    allowed = client("outbox_relay").post("/", headers={"X-API-Key": "k1"})

    _assert_json_error(refused, 401)
    assert _assert_json_error(wrong_method, 405) == "Method GET not allowed; use POST"
    assert allowed.status_code == 200, allowed.get_data(as_text=True)


@pytest.mark.parametrize(
    ("environment", "named"),
    [
        # A key-level error: pydantic's message quotes the whole setting, every key in it.
        ({"API_KEYS": "k_live_8f3a9c2d7e1b4a6f,k_new_\u00e9"}, "API_KEYS"),
        # A cross-field one: pydantic's message quotes the start and end of every setting.
        (
            {
                "API_KEYS": "k_live_8f3a9c2d7e1b4a6f",
                "DB_POOL_MIN_SIZE": "5",
                "DB_POOL_MAX_SIZE": "2",
            },
            "DB_POOL_MIN_SIZE",
        ),
        # A URL libpq cannot read: its message quotes the part, here the password.
        ({"DATABASE_URL": "postgresql://app:p%zzk_live_8f3a9c2d7e1b4a6f@db/m"}, "DATABASE_URL"),
    ],
)
def test_settings_that_do_not_validate_are_logged_without_their_values(
    services, monkeypatch, caplog, environment, named
):
    install_services(None)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        response = client("predict").post("/", json={})
    finally:
        get_settings.cache_clear()

    assert _assert_json_error(response, 500) == "Internal server error"
    # What is wrong, by the setting's name, and none of the values.
    assert "invalid setting: " in caplog.text
    assert named in caplog.text
    assert "8f3a9c2d" not in caplog.text


def test_an_error_outside_every_handler_is_a_json_500(services, monkeypatch):
    # Settings that do not validate fail in get_services(), before any handler runs.
    install_services(None)
    monkeypatch.setenv("LOG_LEVEL", "verbose")
    get_settings.cache_clear()
    try:
        # The push consumer reads its settings outside any handler's try: there the
        # handler registered on the app answers, instead of functions-framework's HTML.
        for target in ("async_predict", "outbox_relay", "moderation_consumer"):
            response = client(target).post("/", query_string={"item_id": "1"})

            assert _assert_json_error(response, 500) == "Internal server error"
        # ... with the header functions-framework's own handler sets, logged as a crash.
        assert response.headers["X-Google-Status"] == "crash"
    finally:
        get_settings.cache_clear()
