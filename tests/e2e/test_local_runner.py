"""`python local_runner.py` as a process: the README walkthrough, then a SIGTERM stop."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from infra._process import free_port
from tests.e2e.processes import (
    REPO_ROOT,
    clean_env,
    http,
    settings_env,
    start_process,
    wait_for_status,
    wait_until_answering,
)

SHUTDOWN_LIMIT_S = 5.0


@pytest.fixture
def runner(settings, tmp_path):
    port = free_port()
    env = {**clean_env(), **settings_env(settings)}
    service = start_process(
        "local_runner",
        [sys.executable, "local_runner.py", f"--port={port}", "--seed-demo"],
        cwd=REPO_ROOT,
        env=env,
        log_dir=tmp_path,
    )
    try:
        wait_until_answering(service, f"http://localhost:{port}/healthz", timeout_s=60)
        yield service, f"http://localhost:{port}"
    finally:
        service.stop()


def test_walkthrough_completes_a_task_and_sigterm_stops_the_runner_within_5_s(runner):
    service, base = runner

    status, accepted = http("POST", f"{base}/async_predict?item_id=1")
    assert status == 202, accepted
    result = wait_for_status(
        f"{base}/moderation_result/{accepted['task_id']}", "completed", 15, service
    )
    service.process.send_signal(signal.SIGTERM)
    started = time.monotonic()
    try:
        code = service.process.wait(timeout=SHUTDOWN_LIMIT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the runner was still running {SHUTDOWN_LIMIT_S:g} s after SIGTERM")
    stopped_in = time.monotonic() - started

    assert result["item_id"] == 1
    assert result["model_version"]
    assert code == 0, service.log_tail()
    print(f"local runner stopped {stopped_in:.2f} s after SIGTERM")


def test_runner_serves_ops_endpoints_and_readiness_names_each_dependency(runner):
    _service, base = runner

    ready_status, ready = http("GET", f"{base}/readyz")
    openapi_status, openapi = http("GET", f"{base}/openapi.json")
    missing_status, missing = http("GET", f"{base}/no-such-path")

    assert ready_status == 200, ready
    assert set(ready["checks"]) == {"database", "kafka", "model"}
    assert openapi_status == 200
    assert "/moderation_result/{task_id}" in openapi["paths"]
    assert missing_status == 404
    assert "detail" in missing


def test_a_sigterm_while_start_up_waits_on_an_unanswering_broker_stops_the_runner_at_once(
    settings, tmp_path
):
    # Its topics are asked of a broker that never answers, for up to 15 s, in librdkafka's
    # C code, where no signal handler runs: the stop must not wait that out.
    nowhere = f"127.0.0.1:{free_port()}"
    env = {**clean_env(), **settings_env(settings, KAFKA_BOOTSTRAP_SERVERS=nowhere)}
    command = [sys.executable, "local_runner.py", f"--port={free_port()}"]
    service = start_process("waiting_runner", command, cwd=REPO_ROOT, env=env, log_dir=tmp_path)
    try:
        time.sleep(4)  # past the migrations, which an up-to-date database makes quick
        assert service.process.poll() is None, service.log_tail()
        service.process.send_signal(signal.SIGTERM)
        try:
            code = service.process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the runner still ran 3 s after SIGTERM:\n{service.log_tail()}")
    finally:
        service.stop()

    assert code == 0, service.log_tail()
    assert "stopped during start-up (SIGTERM)" in service.log_tail(), service.log_tail()
