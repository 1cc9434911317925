"""/healthz, /readyz, /metrics and /docs of the ops app, with fakes passed in."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from shared.db.pool import Database
from shared.errors import BrokerUnavailable
from shared.ops.app import create_ops_app
from shared.ops.check import parse_check_command
from shared.ops.health import CHECK_TIMEOUT_S, CheckResult, check_readiness
from shared.ops.probe import probe
from shared.runner.http_server import HttpServer
from tests.fakes import FakeModelLoader, FakePublisher, InMemoryDatabase, fake_services
from tests.python_snippets import run_python


class UnreachablePublisher(FakePublisher):
    def ping(self, timeout_s: float = 2.0) -> None:
        raise BrokerUnavailable("Kafka unreachable: fake outage")


class HangingPublisher(FakePublisher):
    """A ping that answers only when released, as a broker that never replies."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def ping(self, timeout_s: float = 2.0) -> None:
        self.release.wait(5.0)


def _client(services):
    return create_ops_app(lambda: services).test_client()


def test_healthz_is_ok_even_when_every_dependency_is_down():
    services = fake_services()
    services.db.unavailable_for = 1
    services.publisher = UnreachablePublisher()
    services.model = FakeModelLoader(fail_times=100)

    response = _client(services).get("/healthz")

    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_readyz_is_200_and_names_each_check_when_all_are_reachable():
    response = _client(fake_services()).get("/readyz")

    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ready"
    assert set(body["checks"]) == {"database", "kafka", "model"}
    assert all(check["ok"] for check in body["checks"].values())
    assert "fake-model-1" in body["checks"]["model"]["detail"]


@pytest.mark.parametrize("broken", ["database", "kafka", "model"])
def test_readyz_is_503_and_says_which_dependency_is_down(broken):
    services = fake_services()
    if broken == "database":
        services.db.unavailable_for = 1
    elif broken == "kafka":
        services.publisher = UnreachablePublisher()
    else:
        services.model = FakeModelLoader(fail_times=1)

    response = _client(services).get("/readyz")

    assert response.status_code == 503
    checks = response.get_json()["checks"]
    assert {name for name, check in checks.items() if not check["ok"]} == {broken}
    assert checks[broken]["detail"]


class LeakyPublisher(FakePublisher):
    def ping(self, timeout_s: float = 2.0) -> None:
        raise BrokerUnavailable("Kafka unreachable: broker-7.internal:9093 refused user ops-admin")


def test_a_failed_check_tells_the_probe_a_short_reason_and_logs_the_error(caplog):
    # The ops port is unauthenticated: hosts, ports and users stay in the log.
    services = fake_services()
    services.publisher = LeakyPublisher()

    response = _client(services).get("/readyz")

    assert response.status_code == 503
    detail = response.get_json()["checks"]["kafka"]["detail"]
    assert detail == "Kafka unavailable: see the process's log"
    assert "broker-7.internal" not in response.get_data(as_text=True)
    assert any("broker-7.internal:9093" in r.getMessage() for r in caplog.records)


def test_a_model_that_fails_to_load_is_logged_with_the_loaders_reason(caplog):
    services = fake_services()
    services.model = FakeModelLoader(fail_times=1)

    response = _client(services).get("/readyz")

    assert response.get_json()["checks"]["model"] == {
        "ok": False,
        "detail": "model not loaded: see the process's log",
    }
    assert any("model unavailable: fake outage" in r.getMessage() for r in caplog.records)


def test_a_check_that_crashes_is_not_ready_and_logged_with_its_traceback(caplog):
    class CrashingPublisher(FakePublisher):
        def ping(self, timeout_s: float = 2.0) -> None:
            raise KeyError("secret-token-in-a-bug")

    services = fake_services()
    services.publisher = CrashingPublisher()

    checks = check_readiness(services, names=("kafka",))

    assert checks["kafka"] == CheckResult(False, "Kafka unavailable: see the process's log")
    crashed = [r for r in caplog.records if "crashed" in r.getMessage()]
    assert crashed and crashed[0].exc_info
    assert "secret-token-in-a-bug" in str(crashed[0].exc_info[1])


def test_a_check_that_hangs_is_reported_as_not_answering_within_the_timeout():
    services = fake_services()
    publisher = HangingPublisher()
    services.publisher = publisher
    try:
        checks = check_readiness(services, timeout_s=0.2)
    finally:
        publisher.release.set()

    assert checks["kafka"].ok is False
    assert "no answer within 0.2 s" in checks["kafka"].detail
    assert checks["database"].ok and checks["model"].ok


class RecordingPublisher(FakePublisher):
    def __init__(self) -> None:
        super().__init__()
        self.ping_timeouts: list[float] = []

    def ping(self, timeout_s: float = 2.0) -> None:
        self.ping_timeouts.append(timeout_s)


class RecordingDatabase(InMemoryDatabase):
    def __init__(self) -> None:
        super().__init__()
        self.ping_timeouts: list[float | None] = []

    def ping(self, timeout_s: float | None = None) -> None:
        self.ping_timeouts.append(timeout_s)


def test_the_kafka_check_gives_its_ping_less_than_the_checks_own_deadline():
    # A ping that waited the whole deadline answered too late to be read, and its
    # reason (which broker, which topic) never reached the log.
    services = fake_services()
    services.publisher = publisher = RecordingPublisher()

    check_readiness(services, names=["kafka"])

    [timeout_s] = publisher.ping_timeouts
    assert 0 < timeout_s < CHECK_TIMEOUT_S


def test_the_database_check_waits_for_a_connection_less_than_the_checks_own_deadline():
    # DB_CONNECT_TIMEOUT_S (5 s by default) is longer than the check's deadline.
    services = fake_services(db_connect_timeout_s=5.0)
    services.db = database = RecordingDatabase()

    check_readiness(services, names=["database"])

    [timeout_s] = database.ping_timeouts
    assert timeout_s is not None and 0 < timeout_s < CHECK_TIMEOUT_S


class HangingDatabase(InMemoryDatabase):
    """A ping that answers only when released, as a server that never replies."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def ping(self, timeout_s: float | None = None) -> None:
        self.release.wait(5.0)


def test_checks_that_all_hang_are_answered_within_one_timeout_not_one_each():
    services = fake_services()
    services.publisher = publisher = HangingPublisher()
    services.db = database = HangingDatabase()
    try:
        started = time.monotonic()
        checks = check_readiness(services, timeout_s=1.0, names=["database", "kafka"])
        elapsed = time.monotonic() - started
    finally:
        publisher.release.set()
        database.release.set()

    assert not checks["database"].ok and not checks["kafka"].ok
    # One deadline for all: waited out one after the other, the two would take 2 s.
    assert elapsed < 1.8, f"two hanging checks took {elapsed:.2f} s, past one 1 s deadline"


_HUNG_CHECK_THEN_EXIT = """
import threading, time
from shared.ops.health import check_readiness
from tests.fakes import FakePublisher, fake_services

class Frozen(FakePublisher):
    def ping(self, timeout_s=2.0):
        threading.Event().wait()  # never answers, as a dependency that froze

services = fake_services()
services.publisher = Frozen()
checks = check_readiness(services, timeout_s=0.2)
print(checks["kafka"].ok, flush=True)
"""


def test_a_check_that_never_answers_does_not_hold_the_process_at_exit():
    # An executor's worker threads are joined at interpreter exit: a probe that met a
    # frozen dependency would keep a stopping consumer alive until it was killed.
    # A process held at exit never ends: TimeoutExpired.
    finished = run_python(_HUNG_CHECK_THEN_EXIT, timeout_s=15)

    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.strip() == "False"


def test_metrics_reports_the_model_version_and_the_service_metrics():
    services = fake_services()
    services.model.get()  # loaded, as a consumer or relay process loads it at start

    response = _client(services).get("/metrics")

    assert response.status_code == 200
    # Prometheus's text format, its charset once.
    assert response.headers["Content-Type"] == "text/plain; version=1.0.0; charset=utf-8"
    text = response.get_data(as_text=True)
    assert 'moderation_model_info{version="fake-model-1"} 1.0' in text
    for name in (
        "moderation_http_requests_total",
        "moderation_http_request_duration_seconds",
        "moderation_tasks_total",
        "moderation_batch_retries_total",
        "moderation_batch_replays_total",
        "moderation_dlq_records_total",
        "moderation_batch_size_records",
        "moderation_consumer_lag_records",
    ):
        assert f"# TYPE {name.removesuffix('_total')}" in text, name


def test_docs_serves_swagger_ui_from_the_bundled_files():
    client = _client(fake_services())

    page = client.get("/docs")
    script = client.get("/docs/static/swagger-ui-bundle.js")

    assert page.status_code == 200
    assert "/openapi.json" in page.get_data(as_text=True)
    assert "/docs/static/swagger-ui-bundle.js" in page.get_data(as_text=True)
    assert "http" not in page.get_data(as_text=True).split("<body>")[1]  # nothing from a CDN
    assert script.status_code == 200
    assert b"SwaggerUIBundle" in script.get_data()


def test_unknown_ops_path_and_wrong_method_are_json_errors():
    client = _client(fake_services())

    missing = client.get("/docs/static/nope.js")
    wrong_method = client.post("/healthz")

    assert missing.status_code == 404
    assert "detail" in missing.get_json()
    assert wrong_method.status_code == 405
    assert "detail" in wrong_method.get_json()


def test_a_wrong_method_on_an_ops_path_is_told_the_methods_it_may_use():
    # A 405 names what is allowed (RFC 9110, section 15.5.6).
    response = _client(fake_services()).post("/readyz")

    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, HEAD"


@contextlib.contextmanager
def _answering_server(send: Callable[[socket.socket], None]) -> Iterator[int]:
    """A one-connection server on loopback that answers with `send`; its port."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with conn:
                send(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        thread.join(15)


def test_the_probe_says_in_one_line_that_a_port_does_not_speak_http():
    with _answering_server(lambda conn: conn.sendall(b"hello\r\n")) as port:
        healthy, detail = probe(f"http://127.0.0.1:{port}/", timeout_s=5)

    assert not healthy
    assert detail.startswith(f"http://127.0.0.1:{port}/: no HTTP answer (BadStatusLine")


def test_the_probe_gives_up_at_its_timeout_on_a_server_answering_a_byte_at_a_time():
    # urlopen's timeout bounds each read: a byte every 0.3 s never trips it.
    def trickle(conn: socket.socket) -> None:
        for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"y" * 30:
            conn.sendall(bytes([byte]))
            time.sleep(0.3)

    with _answering_server(trickle) as port:
        started = time.monotonic()
        healthy, detail = probe(f"http://127.0.0.1:{port}/", timeout_s=1)
        took_s = time.monotonic() - started

    assert (healthy, detail) == (False, f"http://127.0.0.1:{port}/: no answer within 1 s")
    assert took_s < 5  # the trickle lasts 15 s


def test_the_probe_takes_any_answer_below_500_as_serving_and_a_5xx_as_not():
    # A function deployed alone answers a bare GET with a JSON 404 or 405: it serves.
    services = fake_services()
    services.publisher = UnreachablePublisher()
    server = HttpServer(create_ops_app(lambda: services), "127.0.0.1", 0)
    server.start()
    try:
        not_found = probe(f"http://127.0.0.1:{server.port}/nothing-here", timeout_s=5)
        not_ready = probe(f"http://127.0.0.1:{server.port}/readyz", timeout_s=5)
    finally:
        server.stop()

    assert not_found == (True, f"http://127.0.0.1:{server.port}/nothing-here: HTTP 404")
    assert not_ready == (False, f"http://127.0.0.1:{server.port}/readyz: HTTP 503")


@pytest.mark.parametrize("path", ["/docs/static//swagger-ui.css", "/docs/static//etc/passwd"])
def test_a_path_with_a_double_slash_is_a_json_404_not_a_redirect_built_from_the_host(path):
    response = _client(fake_services()).get(path, headers={"Host": "evil.example"})

    assert response.status_code == 404
    assert response.mimetype == "application/json"
    assert "Location" not in response.headers


def test_readyz_runs_only_the_checks_a_process_needs():
    services = fake_services()
    services.model = FakeModelLoader(fail_times=5)  # a relay has no use for the model

    response = create_ops_app(lambda: services, ("database", "kafka")).test_client().get("/readyz")

    assert response.status_code == 200
    assert set(response.get_json()["checks"]) == {"database", "kafka"}
    assert services.model.loads == 0


def test_a_scrape_never_waits_for_a_model_load():
    services = fake_services()

    response = _client(services).get("/metrics")

    assert response.status_code == 200
    assert services.model.loads == 0


def test_the_check_command_runs_every_check_when_it_names_none():
    # Python 3.11's argparse refused the empty default of nargs="*" with choices.
    assert parse_check_command([]).names == ["database", "kafka", "model"]
    assert parse_check_command(["kafka", "database"]).names == ["kafka", "database"]


def test_the_check_command_waits_longer_than_a_probe_by_default_or_as_long_as_told():
    # In a fresh process the model check imports scikit-learn and loads the model, which
    # took 3-5 s on a busy machine: the probe's 3 s failed it.
    assert parse_check_command(["model"]).timeout_s == 30.0 > CHECK_TIMEOUT_S
    assert parse_check_command(["--timeout", "7.5", "model"]).timeout_s == 7.5


@pytest.mark.parametrize("value", ["0", "-1", "soon", "inf", "nan", "86401", "1e10"])
def test_the_check_command_refuses_a_timeout_that_is_not_a_positive_number_up_to_a_day(
    value, capsys
):
    with pytest.raises(SystemExit) as refused:
        parse_check_command(["--timeout", value])

    assert refused.value.code == 2
    assert f"got {value!r}" in capsys.readouterr().err


def test_the_check_command_refuses_a_check_it_does_not_know(capsys):
    with pytest.raises(SystemExit) as refused:
        parse_check_command(["kafka", "redis"])

    assert refused.value.code == 2
    assert "unknown check redis: choose from database, kafka, model" in capsys.readouterr().err


def test_a_database_that_refuses_connections_is_reported_within_the_deadline_with_its_reason(
    caplog,
):
    # A real pool on a closed port, whose own connect wait (DB_CONNECT_TIMEOUT_S, 5 s by
    # default, 30 here) is longer than the check's: a ping that waited it out answered
    # after the deadline, and its reason was never logged. The ping waits its 2.5 s; the
    # check gets 10 s, so that a thread starved on a loaded machine does not turn the
    # logged reason into "no answer", while a ping that ignored its wait still would.
    services = fake_services()
    services.db = Database("postgresql://127.0.0.1:9/unused", connect_timeout_s=30)
    try:
        results = check_readiness(services, timeout_s=10, names=["database"])
    finally:
        services.db.close()

    assert results["database"] == CheckResult(
        False, "PostgreSQL unavailable: see the process's log"
    )
    [logged] = [r for r in caplog.records if "readiness check database failed" in r.getMessage()]
    assert "PostgreSQL unavailable" in logged.getMessage()


def test_a_readiness_check_failing_again_and_again_is_logged_once_a_minute(caplog):
    services = fake_services()
    services.publisher = UnreachablePublisher()

    for _ in range(3):  # three probes of one outage
        results = check_readiness(services, names=["kafka"])
        assert not results["kafka"].ok

    logged = [r for r in caplog.records if "readiness check kafka failed" in r.getMessage()]
    assert len(logged) == 1
