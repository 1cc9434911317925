"""The consumer as a process of its own (`python -m shared.runner.consumer`), so a test can
SIGKILL it the way a crash or an OOM kill would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from infra._process import dying_with_parent, free_port
from shared.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = REPO_ROOT / "var" / "models" / "default"
EXIT_TIMEOUT_S = 15.0


def consumer_environment(settings: Settings, **overrides: object) -> dict[str, str]:
    """The process environment with every setting taken from `settings`, then `overrides`.

    Every field is passed, not only the ones the test changed, so nothing of the
    developer's own environment (a DATABASE_URL, a KAFKA_* variable) leaks in.
    """
    names = {name.upper() for name in Settings.model_fields}
    env = {key: value for key, value in os.environ.items() if key.upper() not in names}
    values = settings.model_dump()
    values["model_uri"] = str(MODEL_DIR)
    values["port"] = free_port()  # the ops port; one per process
    values["ops_host"] = "127.0.0.1"
    values.update({name.lower(): value for name, value in overrides.items()})
    env.update({name.upper(): str(value) for name, value in values.items()})
    env["PYTHONUNBUFFERED"] = "1"
    return env


class ConsumerProcess:
    """One `python -m shared.runner.consumer`, its output kept in `log_path`."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self.ops_url = f"http://127.0.0.1:{env['PORT']}"
        with log_path.open("ab") as log:
            self._process = subprocess.Popen(
                # So a pytest killed by a CI timeout takes it along: nothing else would.
                dying_with_parent([sys.executable, "-m", "shared.runner.consumer"], signal.SIGKILL),
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own session: a Ctrl-C on pytest reaches the test, not the consumer.
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self._process.pid

    def is_alive(self) -> bool:
        return self._process.poll() is None

    def freeze(self) -> None:
        """SIGSTOP: it does nothing more (no offset commit, no answer on /metrics) until
        thawed or killed."""
        os.kill(self._process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self._process.pid, signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, nothing is committed on the way out."""
        if self.is_alive():
            os.kill(self._process.pid, signal.SIGKILL)
        self._process.wait(timeout=EXIT_TIMEOUT_S)

    def stop(self) -> int | None:
        """SIGTERM, as an orchestrator stops a replica; the exit code, None if it hung (killed)."""
        if self.is_alive():
            self._process.send_signal(signal.SIGTERM)
        try:
            return self._process.wait(timeout=EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def metric(self, name: str, **labels: str) -> float:
        """A sample of the process's /metrics (0 if it has none yet)."""
        text = requests.get(f"{self.ops_url}/metrics", timeout=5).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return sample.value
        return 0.0

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])
