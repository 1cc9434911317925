"""`python local_runner.py` with nothing configured: embedded PostgreSQL (data kept in the
state directory between runs) and librdkafka's in-memory mock Kafka."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

import pytest

from infra._process import free_port
from tests.e2e.processes import (
    REPO_ROOT,
    ServiceProcess,
    clean_env,
    http,
    model_uri,
    start_process,
    wait_for_status,
    wait_until_answering,
)
from tests.waiting import wait_until

pytestmark = pytest.mark.slow


def _start_runner(tmp_path, name: str) -> tuple[ServiceProcess, str]:
    port = free_port()
    # No DATABASE_URL, no KAFKA_BOOTSTRAP_SERVERS: the runner brings its own.
    env = {**clean_env(), "MODEL_URI": model_uri(), "CONSUMER_POLL_TIMEOUT_S": "0.2"}
    command = [
        sys.executable,
        "local_runner.py",
        f"--port={port}",
        f"--state-dir={tmp_path / 'state'}",
    ]
    service = start_process(name, command, cwd=REPO_ROOT, env=env, log_dir=tmp_path)
    wait_until_answering(service, f"http://localhost:{port}/healthz", timeout_s=90)
    return service, f"http://localhost:{port}"


def _stop(service: ServiceProcess) -> int:
    service.process.send_signal(signal.SIGTERM)
    try:
        return service.process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the runner still ran 5 s after SIGTERM:\n{service.log_tail()}")


def test_runner_needs_no_servers_and_keeps_its_database_between_runs(tmp_path):
    first, base = _start_runner(tmp_path, "first_run")
    try:
        status, accepted = http("POST", f"{base}/async_predict?item_id=1")
        assert status == 202, accepted
        task_url = f"{base}/moderation_result/{accepted['task_id']}"
        wait_for_status(task_url, "completed", 15, first)
        first_code = _stop(first)
    finally:
        first.stop()
    second, base = _start_runner(tmp_path, "second_run")
    try:
        status, kept = http("GET", f"{base}/moderation_result/{accepted['task_id']}")
        second_code = _stop(second)
    finally:
        second.stop()

    assert first_code == 0, first.log_tail()
    assert "IN-MEMORY mock Kafka" in first.log_tail(200)
    assert "embedded PostgreSQL at postgresql://postgres:****@127.0.0.1:" in first.log_tail(200)
    password = (tmp_path / "state" / "postgres" / "password").read_text().strip()
    assert password not in first.log_tail(200) + second.log_tail(200)
    assert status == 200, kept
    assert kept["status"] == "completed"
    assert second_code == 0, second.log_tail()


def test_a_hangup_during_start_up_stops_the_runner_and_its_embedded_postgres(tmp_path):
    # Kafka named but unreachable: start-up waits on it (15 s for the topics), well past
    # the embedded PostgreSQL's start, and a closed terminal's SIGHUP comes meanwhile.
    env = {
        **clean_env(),
        "MODEL_URI": model_uri(),
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        # Names of its own, which a runner on its embedded database needs on a real broker.
        "KAFKA_MODERATION_TOPIC": "hangup-moderation",
        "KAFKA_DLQ_TOPIC": "hangup-moderation-dlq",
        "KAFKA_CONSUMER_GROUP": "hangup-consumer",
    }
    state = tmp_path / "state"
    command = [sys.executable, "local_runner.py", f"--port={free_port()}", f"--state-dir={state}"]
    runner = start_process("hung_up", command, cwd=REPO_ROOT, env=env, log_dir=tmp_path)
    postmaster_pid = state / "postgres" / "data" / "postmaster.pid"
    postgres_log = state / "postgres" / "postgres.log"
    try:
        wait_until(
            lambda: postgres_log.exists() and "ready to accept" in postgres_log.read_text(),
            timeout_s=60,
            what="the embedded PostgreSQL to be ready",
        )
        runner.process.send_signal(signal.SIGHUP)
        try:
            code = runner.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the runner still ran 5 s after SIGHUP:\n{runner.log_tail()}")
    finally:
        runner.stop()

    assert code == 0, runner.log_tail()
    assert "stopped during start-up (SIGHUP)" in runner.log_tail(), runner.log_tail()
    # PostgreSQL removes its pid file when it has shut down.
    assert not postmaster_pid.exists(), "the embedded PostgreSQL was left running"


def test_a_taken_port_fails_start_up_before_anything_is_started(tmp_path):
    state = tmp_path / "state"
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        command = [sys.executable, "local_runner.py", f"--port={port}", f"--state-dir={state}"]
        env = {**clean_env(), "MODEL_URI": model_uri()}
        finished = subprocess.run(
            command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
        )

    assert finished.returncode == 1, finished.stderr
    last_line = finished.stderr.strip().splitlines()[-1]
    assert last_line == (
        f"local_runner: start-up failed: cannot listen on 127.0.0.1:{port}: Address already in use"
    ), finished.stderr
    assert not (state / "postgres").exists(), "the embedded PostgreSQL was started for nothing"
