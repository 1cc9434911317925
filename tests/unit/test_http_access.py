"""What every HTTP function shares: API keys, settings that do not validate, a bug's 500.

The functions are called through functions-framework's test client, with fakes wired in."""

from __future__ import annotations

import io
import json
import logging
import threading
import time

import flask
import pytest
from werkzeug.test import EnvironBuilder, run_wsgi_app

from shared.bootstrap import install_services
from shared.http import register_json_errors
from shared.http.auth import forget_the_open_api_warning, warn_that_the_api_is_open
from shared.settings import get_settings
from tests.fakes import VALID_AD
from tests.unit.http_client import assert_json_error, client


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-API-Key": "wrong"},
        {"Authorization": "Bearer no"},
        {"Authorization": "Bearer no", "X-API-Key": "wrong"},
        {"Authorization": "Basic k1"},
        {"X-API-Key": ""},
        # Not HTTP's whitespace around a value: the key with it is another key.
        {"X-API-Key": "\xa0k1\xa0"},
        {"Authorization": "Bearer \xa0k1"},
    ],
)
def test_with_api_keys_set_a_missing_or_wrong_key_gets_401(services, headers):
    services.settings = services.settings.model_copy(update={"api_keys": "k1,k2"})

    response = client("predict").post("/predict", json=VALID_AD, headers=headers)

    assert_json_error(response, 401)


@pytest.mark.parametrize(
    "headers",
    [
        {"X-API-Key": "k2"},
        {"Authorization": "Bearer k1"},
        # As gunicorn strips header values itself; werkzeug's server (the runner) does not.
        {"X-API-Key": " k2 "},
        {"Authorization": "Bearer k1 "},
        # A platform in front (Cloud Run's IAM, a gateway) holds Authorization for its
        # own token; the key then comes in X-API-Key, and either may be the valid one.
        {"Authorization": "Bearer platform-token", "X-API-Key": "k2"},
        {"Authorization": "Bearer k1", "X-API-Key": "stale"},
    ],
)
def test_with_api_keys_set_either_header_form_is_accepted(services, headers):
    services.settings = services.settings.model_copy(update={"api_keys": "k1,k2"})

    response = client("predict").post("/predict", json=VALID_AD, headers=headers)

    assert response.status_code == 200


def test_with_api_keys_set_the_bearer_scheme_is_taken_in_any_case(services):
    # An authentication scheme is case-insensitive (RFC 9110, section 11.1): clients and
    # proxies that send `bearer` hold a valid key all the same.
    services.settings = services.settings.model_copy(update={"api_keys": "k1"})

    response = client("predict").post(
        "/predict", json=VALID_AD, headers={"Authorization": "bearer k1"}
    )

    assert response.status_code == 200, response.get_data(as_text=True)


def test_an_open_api_is_logged_once_per_process_as_a_warning(services, caplog):
    forget_the_open_api_warning()  # as in a process that has served nothing

    for _ in range(3):
        assert client("predict").post("/predict", json=VALID_AD).status_code == 200

    warnings = [r for r in caplog.records if r.levelname == "WARNING" and "API_KEYS" in r.message]
    assert len(warnings) == 1
    assert "API_KEYS is empty" in warnings[0].message


def test_first_requests_at_once_still_warn_once():
    forget_the_open_api_warning()
    slow = SlowHandler()
    logging.getLogger("shared.http.auth").addHandler(slow)
    try:
        callers = [threading.Thread(target=warn_that_the_api_is_open) for _ in range(8)]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join(timeout=10)
    finally:
        logging.getLogger("shared.http.auth").removeHandler(slow)

    assert not any(caller.is_alive() for caller in callers), "a caller still ran after 10 s"
    assert slow.handled == 1


class SlowHandler(logging.Handler):
    """Holds each record long enough for the other callers to arrive meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.handled = 0

    def emit(self, record: logging.LogRecord) -> None:
        time.sleep(0.05)
        self.handled += 1


def test_with_api_keys_set_nothing_warns_of_an_open_api(services, caplog):
    forget_the_open_api_warning()
    services.settings = services.settings.model_copy(update={"api_keys": "k1"})

    response = client("predict").post("/predict", json=VALID_AD, headers={"X-API-Key": "k1"})

    assert response.status_code == 200
    assert not [r for r in caplog.records if "API_KEYS is empty" in r.message]


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

    assert assert_json_error(response, 500) == "Internal server error"
    # What is wrong, by the setting's name, and none of the values.
    assert "invalid setting: " in caplog.text
    assert named in caplog.text
    assert "8f3a9c2d" not in caplog.text


def test_settings_that_do_not_validate_are_logged_once_a_minute_without_a_traceback(
    services, monkeypatch, caplog
):
    install_services(None)
    monkeypatch.setenv("LOG_LEVEL", "loud-but-once")
    get_settings.cache_clear()
    try:
        for target in ("predict", "async_predict", "predict", "moderation_consumer"):
            client(target).post("/", data=b"{}")
    finally:
        get_settings.cache_clear()

    refusals = [record for record in caplog.records if "invalid setting" in record.getMessage()]
    # Every request fails alike until the function is redeployed: one line says why.
    assert [(r.levelno, r.exc_info) for r in refusals] == [(logging.ERROR, None)]
    assert "LOG_LEVEL" in refusals[0].getMessage()
    assert "loud-but-once" in refusals[0].getMessage()


def test_settings_that_do_not_validate_are_a_json_500_from_every_kind_of_function(
    services, monkeypatch
):
    # Settings that do not validate fail in get_services(), inside each handler's try.
    install_services(None)
    monkeypatch.setenv("LOG_LEVEL", "verbose")
    get_settings.cache_clear()
    try:
        for target in ("async_predict", "outbox_relay"):
            response = client(target).post("/", query_string={"item_id": "1"})

            assert assert_json_error(response, 500) == "Internal server error"
        # The push consumer also says the record is not taken, for the platform to resend.
        pushed = client("moderation_consumer").post("/", data=b"{}")
        assert assert_json_error(pushed, 500) == (
            "Internal server error: the record was not processed"
        )
    finally:
        get_settings.cache_clear()


def test_an_error_outside_every_handler_is_a_json_500_marked_as_a_crash():
    app = flask.Flask("crashing")
    register_json_errors(app.errorhandler)

    @app.get("/")
    def crash() -> str:
        raise RuntimeError("a bug outside any handler's try")

    response = app.test_client().get("/")

    assert assert_json_error(response, 500) == "Internal server error"
    # The header functions-framework's own handler sets, which its platform logs as a crash.
    assert response.headers["X-Google-Status"] == "crash"


class _CountedBody(io.RawIOBase):
    """A request body of `size` bytes that counts how many of them were read."""

    def __init__(self, size: int) -> None:
        self.left, self.read_bytes = size, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        taken = min(len(buffer), self.left)
        buffer[:taken] = b"x" * taken
        self.left -= taken
        self.read_bytes += taken
        return taken


@pytest.mark.parametrize("target", ["predict", "async_predict", "outbox_relay"])
def test_settings_that_do_not_validate_are_answered_without_reading_the_body(
    services, monkeypatch, target
):
    # functions-framework reads the whole body after a response that is not streamed,
    # with no limit: a misconfigured function took in 50 MB to answer its 500.
    install_services(None)
    monkeypatch.setenv("LOG_LEVEL", "verbose")
    body = _CountedBody(50_000_000)
    get_settings.cache_clear()
    try:
        environ = EnvironBuilder(
            path="/", method="POST", query_string={"item_id": "1"}, content_type="application/json"
        ).get_environ()
        # Set after building: the test client's own request would seek the stream.
        environ["wsgi.input"] = io.BufferedReader(body)
        environ["CONTENT_LENGTH"] = "50000000"
        chunks, status, _ = run_wsgi_app(client(target).application, environ, buffered=True)
        detail = json.loads(b"".join(chunks))["detail"]
    finally:
        get_settings.cache_clear()

    assert (status, detail) == ("500 INTERNAL SERVER ERROR", "Internal server error")
    assert body.read_bytes == 0
