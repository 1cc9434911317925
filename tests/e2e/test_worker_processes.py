"""The consumer and relay entry points as processes, as docker-compose runs them: a task
left unpublished is relayed to Kafka, consumed and completed; both stop on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import psycopg
import pytest

from infra._process import free_port
from shared.runner.demo_data import seed_demo_data
from tests.e2e.processes import (
    REPO_ROOT,
    ServiceProcess,
    clean_env,
    http,
    settings_env,
    start_process,
    wait_until_answering,
)

SHUTDOWN_LIMIT_S = 5.0


@pytest.fixture
def workers(settings, tmp_path):
    started: dict[str, tuple[ServiceProcess, str]] = {}
    try:
        for name in ("consumer", "relay"):
            port = free_port()
            env = {**clean_env(), **settings_env(settings, PORT=str(port))}
            command = [sys.executable, "-m", f"shared.runner.{name}"]
            service = start_process(name, command, cwd=REPO_ROOT, env=env, log_dir=tmp_path)
            started[name] = (service, f"http://127.0.0.1:{port}")
        for service, base in started.values():
            wait_until_answering(service, f"{base}/healthz", timeout_s=60)
        yield started
    finally:
        for service, _base in started.values():
            service.stop()


def _task_status(database_url: str, task_id: int) -> str:
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        return conn.execute(
            "SELECT status FROM moderation_results WHERE id = %s", (task_id,)
        ).fetchone()[0]


def test_an_unpublished_task_is_relayed_consumed_and_both_processes_stop_cleanly(workers, settings):
    seed_demo_data(settings.database_url)
    with psycopg.connect(settings.database_url, connect_timeout=5) as conn:
        # As if the HTTP function committed the task and died before publishing it.
        task_id = conn.execute(
            "INSERT INTO moderation_results (item_id) VALUES (1) RETURNING id"
        ).fetchone()[0]

    deadline = time.monotonic() + 20
    while _task_status(settings.database_url, task_id) != "completed":
        if time.monotonic() > deadline:
            pytest.fail(
                f"task {task_id} not completed within 20 s:\n"
                + "\n".join(service.log_tail(15) for service, _ in workers.values())
            )
        time.sleep(0.1)
    readiness = {name: http("GET", f"{base}/readyz") for name, (_, base) in workers.items()}
    codes = {}
    for name, (service, _base) in workers.items():
        service.process.send_signal(signal.SIGTERM)
        try:
            codes[name] = service.process.wait(timeout=SHUTDOWN_LIMIT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{name} still ran {SHUTDOWN_LIMIT_S:g} s after SIGTERM")

    assert readiness["consumer"][0] == 200, readiness["consumer"]
    assert set(readiness["consumer"][1]["checks"]) == {"database", "kafka", "model"}
    assert readiness["relay"][0] == 200, readiness["relay"]
    assert set(readiness["relay"][1]["checks"]) == {"database", "kafka"}
    assert codes == {"consumer": 0, "relay": 0}
