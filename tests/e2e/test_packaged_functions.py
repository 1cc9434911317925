"""Each `make package` bundle, started alone with functions-framework (cwd and PYTHONPATH
the bundle, not the repository), answers over HTTP against the test Kafka and PostgreSQL,
importing nothing its own requirements.txt does not bring in (`bundle_imports`)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from infra._process import free_port
from infra.package import build_bundle
from shared.runner.demo_data import seed_demo_data
from tests.e2e.bundle_imports import write_import_guard
from tests.e2e.processes import (
    ServiceProcess,
    clean_env,
    http,
    settings_env,
    start_process,
    wait_for_status,
    wait_until_answering,
)

pytestmark = pytest.mark.slow

AD = {
    "seller_id": 1,
    "is_verified_seller": True,
    "item_id": 10,
    "name": "Road bike",
    "description": "Aluminium frame, serviced in May.",
    "category": 3,
    "images_qty": 4,
}
# (target, bundle folder)
TARGETS = [
    ("predict", "predict"),
    ("simple_predict", "predict"),
    ("async_predict", "async_predict"),
    ("moderation_result", "moderation_result"),
    ("moderation_consumer", "moderation_consumer"),
    ("outbox_relay", "outbox_relay"),
]


def _functions_framework() -> str:
    installed = Path(sys.executable).parent / "functions-framework"
    found = str(installed) if installed.exists() else shutil.which("functions-framework")
    if found is None:
        pytest.fail("functions-framework is not installed: run `make venv`")
    return found


def _import_origin(bundle: Path, env: dict[str, str]) -> str:
    """Where `shared` comes from for a process started like the function."""
    return subprocess.run(
        [sys.executable, "-c", "import shared; print(shared.__file__)"],
        cwd=bundle,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.strip()


@pytest.fixture
def functions(settings, tmp_path):
    """Every target's bundle, built into tmp_path and served on a port of its own."""
    seed_demo_data(settings.database_url)
    framework = _functions_framework()
    services: dict[str, tuple[ServiceProcess, str]] = {}
    bundles = {folder: build_bundle(folder, tmp_path / "bundles") for _, folder in TARGETS}
    try:
        for target, folder in TARGETS:
            bundle = bundles[folder]
            port = free_port()
            guard = tmp_path / "import-guards" / folder
            write_import_guard(bundle / "requirements.txt", guard)
            env = {
                **clean_env(),
                **settings_env(settings, PORT=str(port)),
                # The guard after the bundle, so that the bundle's own modules come first.
                "PYTHONPATH": os.pathsep.join([str(bundle), str(guard)]),
            }
            assert _import_origin(bundle, env).startswith(str(bundle))
            command = [framework, "--source", "main.py", "--target", target, f"--port={port}"]
            service = start_process(target, command, cwd=bundle, env=env, log_dir=tmp_path)
            services[target] = (service, f"http://127.0.0.1:{port}")
        for service, base in services.values():
            wait_until_answering(service, f"{base}/", timeout_s=90)
        yield services
    finally:
        for service, _base in services.values():
            service.stop()


def _post_cut_short(base: str, body: bytes, declared: int) -> tuple[int, dict]:
    """POST `body` under a larger Content-Length, then stop sending: (status, JSON body)."""
    address = urlsplit(base)
    with socket.create_connection((address.hostname, address.port), timeout=10) as client:
        client.sendall(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {declared}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        client.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
    head, _, payload = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload)


def test_each_packaged_function_serves_its_endpoint(functions, settings):
    predict = functions["predict"][1]
    simple_predict = functions["simple_predict"][1]
    async_predict = functions["async_predict"][1]
    consumer = functions["moderation_consumer"][1]
    relay = functions["outbox_relay"][1]
    result_service, moderation_result = functions["moderation_result"]

    predicted = http("POST", f"{predict}/predict", AD)
    stored = http("POST", f"{simple_predict}/simple_predict?item_id=1")
    accepted_status, accepted = http("POST", f"{async_predict}/async_predict?item_id=1")
    task_id = accepted["task_id"]
    # The CloudEvent a Knative KafkaSource would push for the task message.
    consumed = http(
        "POST",
        f"{consumer}/",
        {"task_id": task_id, "item_id": 1},
        headers={
            "ce-specversion": "1.0",
            "ce-type": "dev.knative.kafka.event",
            "ce-source": f"/apis/v1/namespaces/default/kafkasources/moderation#"
            f"{settings.kafka_moderation_topic}",
            "ce-id": str(uuid.uuid4()),
            "ce-subject": f"partition:0#{task_id}",
            "ce-key": "1",
        },
    )
    result = wait_for_status(
        f"{moderation_result}/moderation_result/{task_id}", "completed", 15, result_service
    )
    # A task whose publish was never acknowledged, long enough ago for the relay.
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        (stranded,) = conn.execute(
            "INSERT INTO moderation_results (item_id, created_at)"
            " VALUES (1, now() - interval '1 hour') RETURNING id"
        ).fetchone()
        relayed = http("POST", f"{relay}/")
        (published_at,) = conn.execute(
            "SELECT published_at FROM moderation_results WHERE id = %s", (stranded,)
        ).fetchone()

    # Cut short under gunicorn, which hands over what came without a word: the body is
    # refused, not read as the shorter JSON it happens to be.
    body = json.dumps(AD).encode()
    cut_predict = _post_cut_short(predict, body, len(body) + 50)
    cut_push = _post_cut_short(consumer, b'{"task_id": 1, "item_id": 1}', 80)

    assert cut_predict[0] == 400 and "could not be read" in cut_predict[1]["detail"], cut_predict
    assert cut_push[0] == 400 and "could not be read" in cut_push[1]["detail"], cut_push
    assert predicted[0] == 200, predicted
    assert predicted[1]["item_id"] == 10
    assert stored[0] == 200, stored
    assert stored[1]["item_id"] == 1
    assert accepted_status == 202, accepted
    assert consumed[0] == 200, consumed
    assert consumed[1] == {"status": "processed"}, consumed
    assert result["model_version"] == predicted[1]["model_version"]
    assert relayed[0] == 200, relayed
    assert relayed[1]["published"] == 1 and published_at is not None, relayed
