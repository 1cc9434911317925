"""Starting the service as separate processes, and waiting for them with deadlines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from infra._process import dying_with_parent
from shared.runner.cli import RUNNER_ONLY_VARIABLES
from shared.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = REPO_ROOT / "var" / "models" / "default"


def model_uri() -> str:
    """The model `make model` builds, as an absolute path (the processes run elsewhere)."""
    if not (DEFAULT_MODEL / "model_card.json").exists():
        pytest.fail(f"no model in {DEFAULT_MODEL}: run `make model` first")
    return str(DEFAULT_MODEL)


def settings_env(settings: Settings, **overrides: str) -> dict[str, str]:
    """The environment a process needs to use exactly these settings."""
    env = {name.upper(): str(value) for name, value in settings.model_dump().items()}
    env["MODEL_URI"] = model_uri()
    env.update(overrides)
    return env


@dataclass
class ServiceProcess:
    """A child process with its output in a file, shown when a wait fails."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no output)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout_s: float = 5.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5.0)


def start_process(
    name: str, command: Sequence[str], *, cwd: Path, env: dict[str, str], log_dir: Path
) -> ServiceProcess:
    log_path = log_dir / f"{name}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            # A SIGKILLed pytest stops nothing: SIGTERM lets a runner stop its own
            # embedded PostgreSQL, which a SIGKILL would leave running.
            dying_with_parent(command, signal.SIGTERM),
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return ServiceProcess(name, process, log_path)


def http(
    method: str, url: str, body: object = None, headers: dict[str, str] | None = None
) -> tuple[int, object]:
    """(status, parsed JSON or text) of one request, errors included; bounded by 40 s: a
    function's first request loads the model, 3-5 s on a busy machine, and its 503 says
    so only after the loader's own wait (LOAD_WAIT_S, 30 s)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None and "Content-Type" not in request.headers:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=40) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def wait_until_answering(service: ServiceProcess, url: str, timeout_s: float) -> None:
    """Until `url` answers any HTTP status; fail with the process's output otherwise."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            pytest.fail(
                f"{service.name} exited with {service.process.returncode} while starting:\n"
                f"{service.log_tail()}"
            )
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    pytest.fail(
        f"{service.name} did not answer {url} within {timeout_s:g} s:\n{service.log_tail()}"
    )


def wait_for_status(
    url: str, wanted: str, timeout_s: float, service: ServiceProcess | None = None
) -> dict:
    """Poll a moderation result until its status is `wanted`; fail with the last answer."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        status, last = http("GET", url)
        if status == 200 and isinstance(last, dict) and last["status"] == wanted:
            return last
        time.sleep(0.05)
    output = f"\n{service.log_tail()}" if service else ""
    pytest.fail(f"{url} was not {wanted!r} within {timeout_s:g} s; last answer: {last}{output}")


def clean_env() -> dict[str, str]:
    """This process's environment without the service's settings or a PYTHONPATH."""
    names = {name.upper() for name in Settings.model_fields} | {"PYTHONPATH", "MODEL_URI"}
    names |= set(RUNNER_ONLY_VARIABLES)  # a HOST set for a dev image must not move the runner
    return {key: value for key, value in os.environ.items() if key.upper() not in names}
