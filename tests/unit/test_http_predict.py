"""`predict` and `simple_predict`: the verdict, and every way a body or an item id is refused.

The functions are called through functions-framework's test client, with fakes wired in."""

from __future__ import annotations

import gzip
import hashlib
import io
import json

import pytest

from shared.domain import Ad, Verdict
from shared.http.endpoint import LOGGED_PATH_CHARS
from shared.http.errors import QUOTED_CHARS
from shared.http.request_limits import MAX_QUERY_BYTES
from shared.model.validation import validate_ads
from tests.fakes import VALID_AD, FakeModel, FakeModelLoader
from tests.unit.http_client import assert_json_error, client


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
        ({"name": "x" * 1_001}, "name"),
        ({"category": -1}, "category"),
    ],
)
def test_predict_rejects_each_bad_field_with_422_naming_it(services, change, field):
    response = client("predict").post("/predict", json={**VALID_AD, **change})

    detail = assert_json_error(response, 422)
    assert [issue["loc"] for issue in detail] == [[field]]


def test_predict_lists_every_missing_field(services):
    response = client("predict").post("/predict", json={"item_id": 1})

    detail = assert_json_error(response, 422)
    missing = {issue["loc"][0] for issue in detail}
    assert missing == set(VALID_AD) - {"item_id"}


def test_predict_lists_twenty_problems_of_a_body_then_how_many_more(services):
    body = {**VALID_AD, **{f"u{n}": 0 for n in range(20_000)}}  # within the body limit

    response = client("predict").post("/predict", json=body)

    detail = assert_json_error(response, 422)
    assert len(detail) == 21
    assert all(issue["type"] == "extra_forbidden" for issue in detail[:20])
    assert detail[0]["loc"] == ["u0"]
    assert detail[20] == {"loc": [], "msg": "and 19980 more errors", "type": "too_many_errors"}


def test_predict_counts_the_missing_fields_too_when_unknown_ones_are_many(services):
    # Past 20 unknown fields the body is refused before a whole validation; the model's
    # own fields are still checked, so the count left out is exact and they come first.
    body = {"item_id": 1, "images_qty": "two", **{f"u{n}": 0 for n in range(28)}}

    response = client("predict").post("/predict", json=body)

    detail = assert_json_error(response, 422)
    own = [issue for issue in detail if issue["type"] != "extra_forbidden"][:-1]
    assert {issue["loc"][0] for issue in own} == set(VALID_AD) - {"item_id"}
    assert detail[len(own)]["loc"] == ["u0"]
    unknown_listed = 20 - len(own)
    assert detail[20] == {
        "loc": [],
        "msg": f"and {28 - unknown_listed} more errors",
        "type": "too_many_errors",
    }


def test_predict_lists_a_few_unknown_fields_with_the_other_problems(services):
    body = {**VALID_AD, "images_qty": "two", "colour": "red"}

    response = client("predict").post("/predict", json=body)

    detail = assert_json_error(response, 422)
    assert sorted(issue["loc"][0] for issue in detail) == ["colour", "images_qty"]


def test_predict_refuses_a_field_given_twice_in_the_body_with_422(services):
    # A parser that keeps the first value (a proxy, an audit log) would read another ad.
    body = json.dumps(VALID_AD)[:-1] + ', "item_id": 999, "item_id": 998}'

    response = client("predict").post("/predict", data=body, content_type="application/json")

    detail = assert_json_error(response, 422)
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

    detail = assert_json_error(response, status)
    if status == 422:
        assert [issue["loc"] for issue in detail] == [["category"]]


def test_predict_rejects_a_body_that_is_not_json_with_400(services):
    response = client("predict").post(
        "/predict", data=b"{not json", content_type="application/json"
    )

    assert "not valid JSON" in assert_json_error(response, 400)


def test_predict_rejects_json_nested_too_deeply_with_400(services):
    nested = b"[" * 30_000 + b"]" * 30_000  # within the body limit, past the parser's stack

    response = client("predict").post("/predict", data=nested, content_type="application/json")

    assert "nested too deeply" in assert_json_error(response, 400)


def test_predict_rejects_another_content_type_with_415(services):
    response = client("predict").post("/predict", data="a=1", content_type="text/plain")

    assert "application/json" in assert_json_error(response, 415)


def test_a_long_content_type_is_quoted_back_only_in_part(services):
    sent = "text/plain; x=" + "y" * 60_000

    response = client("predict").post("/predict", data="a=1", content_type=sent)

    detail = assert_json_error(response, 415)
    assert detail.startswith("Expected Content-Type: application/json, got text/plain; x=yyy")
    assert detail.endswith(f"... ({len(sent)} characters)")
    assert len(detail) < 300


def test_a_content_type_just_within_the_quoted_length_is_quoted_back_whole(services):
    # Nothing of it was cut, so nothing says it was.
    sent = "text/plain; x=" + "y" * (QUOTED_CHARS - len("text/plain; x="))

    response = client("predict").post("/predict", data="a=1", content_type=sent)

    assert assert_json_error(response, 415) == (
        f"Expected Content-Type: application/json, got {sent}"
    )


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br"])
def test_a_compressed_body_gets_a_415_that_says_to_send_it_uncompressed(services, coding):
    # Not decompressed, and not read as JSON either: the client would hear its JSON is
    # broken. The body here is the plain ad, so only the header can be refused.
    response = client("predict").post(
        "/predict", json=VALID_AD, headers={"Content-Encoding": coding}
    )

    assert f"Content-Encoding '{coding}' is not accepted" in assert_json_error(response, 415)
    assert response.headers["Accept-Encoding"] == "identity"


@pytest.mark.parametrize("coding", ["gzip, chunked", "deflate,chunked", "x-custom, chunked"])
def test_a_body_in_a_compressing_transfer_coding_gets_the_same_415(services, coding):
    # gunicorn and werkzeug undo the chunking and hand the body on still compressed.
    response = _post_in(coding, gzip.compress(json.dumps(VALID_AD).encode()))

    assert f"Transfer-Encoding '{coding}' is not accepted" in assert_json_error(response, 415)
    assert response.headers["Accept-Encoding"] == "identity"


@pytest.mark.parametrize("coding", ["chunked", "Chunked", "identity, chunked"])
def test_a_body_in_a_plain_transfer_coding_is_read(services, coding):
    response = _post_in(coding, json.dumps(VALID_AD).encode())

    assert response.status_code == 200, response.get_data(as_text=True)


def _post_in(transfer_coding: str, body: bytes):
    """`body` as the server hands it over once its chunks are joined: no Content-Length."""
    return client("predict").post(
        "/predict",
        input_stream=io.BytesIO(body),
        headers={"Transfer-Encoding": transfer_coding, "Content-Type": "application/json"},
        environ_overrides={"wsgi.input_terminated": True, "CONTENT_LENGTH": ""},
    )


def test_a_body_declared_as_identity_encoded_is_read(services):
    response = client("predict").post(
        "/predict", json=VALID_AD, headers={"Content-Encoding": "identity"}
    )

    assert response.status_code == 200, response.get_data(as_text=True)


def test_a_body_declared_as_identity_encoded_in_capitals_is_read(services):
    # Content codings are case-insensitive (RFC 9110, section 8.4.1).
    response = client("predict").post(
        "/predict", json=VALID_AD, headers={"Content-Encoding": "IDENTITY"}
    )

    assert response.status_code == 200, response.get_data(as_text=True)


@pytest.mark.parametrize(
    ("body", "position", "byte"),
    [
        (
            b'{"name": "caf\xe9"}',
            13,
            "0xe9",
        ),  # Latin-1, as a client sending charset=iso-8859-1 would
        (b'\xef\xbb\xbf{"name": "caf\xe9"}', 16, "0xe9"),  # counted from the byte order mark
    ],
    ids=["latin-1", "after-a-byte-order-mark"],
)
def test_a_body_that_is_not_utf8_gets_a_400_naming_the_byte(services, body, position, byte):
    response = client("predict").post(
        "/predict", data=body, content_type="application/json; charset=iso-8859-1"
    )

    assert assert_json_error(response, 400) == (
        f"Request body is not UTF-8, which JSON must be: byte {byte} at position {position}"
        " cannot start or continue a character"
    )


def test_a_content_length_sent_with_transfer_encoding_gets_a_json_400(services):
    # gunicorn refuses such a request itself; werkzeug's server (the runner's) would
    # follow the chunks and ignore the length.
    response = client("predict").post(
        "/predict",
        json=VALID_AD,
        headers={"Transfer-Encoding": "chunked"},
        environ_overrides={"CONTENT_LENGTH": "3"},
    )

    assert assert_json_error(response, 400) == (
        "Content-Length sent with Transfer-Encoding: send one of them"
    )


def test_simple_predict_says_item_id_belongs_in_the_query_when_it_is_missing(services):
    # /predict takes item_id in its body; here the body is not read.
    response = client("simple_predict", "predict").post("/simple_predict", json={"item_id": 1})

    [issue] = assert_json_error(response, 422)
    assert issue == {
        "loc": ["item_id"],
        "msg": "Field required in the query string: ?item_id=...",
        "type": "missing",
    }


def test_predict_rejects_a_body_over_the_limit_with_413(services):
    body = {**VALID_AD, "description": "x" * services.settings.max_body_bytes}

    response = client("predict").post("/predict", json=body)

    assert_json_error(response, 413)


def test_the_largest_valid_ad_fits_the_body_limit_in_any_json_encoding(services):
    # Characters outside the BMP, escaped as surrogate pairs: 12 bytes each, the most
    # any JSON encoder spends on one character.
    largest = {**VALID_AD, "name": "\U0001f600" * 1_000, "description": "\U0001f600" * 20_000}
    body = json.dumps(largest, ensure_ascii=True)

    response = client("predict").post("/predict", data=body, content_type="application/json")

    assert len(body) > 250_000
    assert response.status_code == 200, response.get_data(as_text=True)[:300]


def _chunked_post(target: str, folder: str, body: bytes):
    """A body with no Content-Length, as gunicorn hands over a chunked one (werkzeug's
    test client would otherwise declare the stream's length)."""
    return client(target, folder).post(
        "/",
        input_stream=io.BytesIO(body),
        headers={"Transfer-Encoding": "chunked", "Content-Type": "application/json"},
        environ_overrides={"wsgi.input_terminated": True, "CONTENT_LENGTH": ""},
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

    assert f"over {services.settings.max_body_bytes}" in assert_json_error(response, 413)
    assert body.taken == 0


@pytest.mark.parametrize("path", ["/robots.txt", "/favicon.ico", "/predict%0A"])
def test_a_body_sent_where_the_framework_answers_404_itself_is_refused_without_being_read(
    services, path
):
    # functions-framework answers these paths without calling the function, so no
    # MAX_BODY_BYTES guards them: its 404 must not take the body in first.
    body = _CountingStream(10 * 1024 * 1024)

    response = client("predict").post(
        path,
        input_stream=body,
        headers={"Content-Length": str(body.size), "Content-Type": "application/json"},
        environ_overrides={"wsgi.input_terminated": True},
    )

    assert assert_json_error(response, 404)
    assert body.taken == 0


def test_a_body_of_exactly_the_limit_is_taken(services):
    body = json.dumps(VALID_AD)
    padded = body[:-1] + " " * (services.settings.max_body_bytes - len(body)) + "}"
    assert len(padded.encode()) == services.settings.max_body_bytes

    response = client("predict").post("/predict", data=padded, content_type="application/json")

    assert response.status_code == 200, response.get_data(as_text=True)


def test_a_chunked_body_over_the_limit_is_rejected_with_413(services):
    body = json.dumps({**VALID_AD, "description": "x" * services.settings.max_body_bytes}).encode()

    assert_json_error(_chunked_post("predict", "predict", body), 413)


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
    detail = assert_json_error(response, 503)
    assert detail == "Temporarily unavailable, retry later: the model is unavailable"
    assert response.headers["Retry-After"] == "5"


def test_a_503_is_logged_with_its_route_and_the_item_it_was_for(services, caplog):
    services.db.unavailable_for = 1

    response = client("simple_predict", "predict").post("/simple_predict?item_id=7")

    assert response.status_code == 503
    (logged,) = [r for r in caplog.records if r.getMessage() == "temporarily unavailable"]
    assert (logged.route, logged.path) == ("simple_predict", "/simple_predict?item_id=7")


def test_a_logged_path_and_query_keep_their_start_and_say_how_long_they_were(services, caplog):
    services.db.unavailable_for = 1
    asked = f"/simple_predict?item_id=7&pad={'x' * 4000}"  # within MAX_QUERY_BYTES

    response = client("simple_predict", "predict").post(asked)

    assert response.status_code == 503
    (logged,) = [r for r in caplog.records if r.getMessage() == "temporarily unavailable"]
    assert logged.path == f"{asked[:LOGGED_PATH_CHARS]}... ({len(asked)} characters)"


def test_predict_refuses_get_with_405(services):
    assert_json_error(client("predict").get("/predict"), 405)


def test_simple_predict_scores_the_stored_ad(services):
    response = client("simple_predict", "predict").post("/simple_predict?item_id=1")

    assert response.status_code == 200
    assert response.get_json()["is_violation"] is True


def test_simple_predict_answers_404_for_an_unknown_ad(services):
    response = client("simple_predict", "predict").post("/simple_predict?item_id=999")

    assert assert_json_error(response, 404) == "Ad not found"


def test_simple_predict_takes_a_repeated_query_parameter_it_does_not_read(services):
    # Only a repeated item_id names two ads; a tracking parameter that a shared link
    # carries twice names nothing the function reads.
    response = client("simple_predict", "predict").post(
        "/simple_predict?item_id=1&utm_source=a&utm_source=b"
    )

    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["is_violation"] is True


class _ValidatingModel(FakeModel):
    """Refuses what the real model refuses, with the real model's validation."""

    def predict(self, ads: list[Ad]) -> list[Verdict]:
        validate_ads(ads)
        return super().predict(ads)


def test_simple_predict_answers_422_for_a_stored_ad_the_model_cannot_score(services):
    services.model = FakeModelLoader(_ValidatingModel())
    services.db.add_ad(Ad(2, 1, False, "Chair", "A chair", -5, 0))  # ads.category has no CHECK

    response = client("simple_predict", "predict").post("/simple_predict?item_id=2")

    detail = assert_json_error(response, 422)
    assert "cannot be scored" in detail and "category" in detail


@pytest.mark.parametrize("item_id", ["", "abc", "1.5", "0", "-1", str(2**63), "1e3"])
def test_simple_predict_rejects_a_bad_item_id_with_422(services, item_id):
    query = "" if item_id == "" else f"?item_id={item_id}"

    response = client("simple_predict", "predict").post(f"/simple_predict{query}")

    assert_json_error(response, 422)


@pytest.mark.parametrize(
    "body",
    [b'{"item_id": ' + b"1" * 4301 + b"}", b'{"item_id": NaN}', b'{"category": Infinity}'],
    ids=["integer-past-python-digit-limit", "NaN", "Infinity"],
)
def test_predict_answers_400_for_json_python_reads_but_json_does_not_allow(services, body):
    response = client("predict").post("/predict", data=body, content_type="application/json")

    detail = assert_json_error(response, 400)
    assert "not valid JSON" in detail
    assert "sys." not in detail  # no advice only the server's own code could follow


@pytest.mark.parametrize("terminated", [False, True], ids=["werkzeug-limit", "gunicorn-stream"])
def test_a_body_shorter_than_its_declared_length_gets_a_json_400(services, terminated):
    # A server that ends the input stream itself (gunicorn) hands over the short body
    # without an error; werkzeug's own limit raises one.
    overrides = {"wsgi.input_terminated": True} if terminated else {}
    response = client("predict").post("/predict", **_short_body(**overrides))

    assert "could not be read" in assert_json_error(response, 400)


@pytest.mark.parametrize("declared", ["abc", "-5", "1e3", "²"])
def test_a_content_length_that_is_not_a_number_gets_a_json_400_that_says_so(services, declared):
    # gunicorn refuses such a request itself; werkzeug (the runner) reads the length as 0.
    response = client("predict").post(
        "/predict",
        data=b"",
        content_type="application/json",
        environ_overrides={"CONTENT_LENGTH": declared},
    )

    assert assert_json_error(response, 400) == (
        f"Content-Length is not a number of bytes: {declared!r}"
    )


def test_a_declared_empty_body_is_not_json(services):
    response = client("predict").post(
        "/predict", data=b"", headers={"Content-Type": "application/json"}
    )

    assert "not valid JSON" in assert_json_error(response, 400)


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

    assert "could not be read" in assert_json_error(response, 400)


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

    assert_json_error(unauthorised, 401)
    assert_json_error(wrong_method, 405)


@pytest.mark.parametrize("item_id", ["1_000", "+1", " 1 ", "10.000", "1e3", "٣"])
def test_an_item_id_that_is_not_plain_decimal_digits_is_a_422(services, item_id):
    # int() reads `1_000` and `+1`, pydantic's lax int `10.000`: each would name another
    # ad, or the right one by accident, instead of telling the caller about the typo.
    for target, folder in (("async_predict", "async_predict"), ("simple_predict", "predict")):
        response = client(target, folder).post("/", query_string={"item_id": item_id})

        detail = assert_json_error(response, 422)
        assert detail[0]["msg"] == "expected a whole number in decimal digits, such as 42"
    assert services.db.state.tasks == {}


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


def test_a_query_string_over_the_limit_is_refused_with_414_before_it_is_parsed(services):
    query = "item_id=1&" + "&".join(f"x{i}=1" for i in range(1000))  # ~8 KB
    assert len(query) > MAX_QUERY_BYTES

    response = client("simple_predict", "predict").post(f"/simple_predict?{query}")

    assert assert_json_error(response, 414) == (
        f"Query string of {len(query)} bytes is over {MAX_QUERY_BYTES}"
    )


def test_a_query_string_of_exactly_the_limit_is_taken(services):
    query = "item_id=1&pad=" + "x" * (MAX_QUERY_BYTES - len("item_id=1&pad="))
    assert len(query) == MAX_QUERY_BYTES

    response = client("simple_predict", "predict").post(f"/simple_predict?{query}")

    assert response.status_code == 200, response.get_data(as_text=True)
