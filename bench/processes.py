"""The processes the benches measure: functions-framework servers and Python entry
points, each on loopback and stopped at the end; and the HTTP calls that warm them up."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.backends import REPO_ROOT
from bench.report import log
from infra import _process
from shared.runner.targets import find_target

SERVER_START_TIMEOUT_S = 60.0
SERVER_STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Server:
    url: str
    pid: int


@contextlib.contextmanager
def function_server(
    source: Path,
    target: str,
    env: dict[str, str],
    *,
    log_dir: Path,
    server_as: str | None = None,
    cpus: int = 1,
) -> Iterator[Server]:
    """`functions-framework --source S --target T` (gunicorn) on a free loopback port.

    gunicorn gets the WORKERS and THREADS the image gives function `server_as` (default:
    `target`) on a machine of `cpus` CPUs, so a baseline can run on exactly a function's
    settings. One CPU by default: one worker, and the load generator has the other core.
    """
    port = _process.free_port()
    command = [
        sys.executable,
        "-m",
        "functions_framework",
        "--source",
        str(source),
        "--target",
        target,
        "--host",
        _process.LOCALHOST,
        "--port",
        str(port),
    ]
    log_path = log_dir / f"{target}-{port}.log"
    child = _process.spawn(
        command,
        log_path=log_path,
        cwd=REPO_ROOT,
        env={**_without_debug(os.environ), **server_env(server_as or target, cpus), **env},
    )
    try:
        _wait_for_port(child, port, log_path, what=f"functions-framework {target}")
        yield Server(f"http://{_process.LOCALHOST}:{port}", child.pid)
    finally:
        stop_child(child, what=target)


def _without_debug(environ: Mapping[str, str]) -> dict[str, str]:
    """functions-framework reads DEBUG as its --debug flag, which serves with Flask's
    development server instead of gunicorn: left in, it would swap the server measured."""
    return {name: value for name, value in environ.items() if name != "DEBUG"}


def server_env(target: str, cpus: int) -> dict[str, str]:
    """WORKERS and THREADS for `target` on `cpus` CPUs, as the image's entry point sets them."""
    return find_target(target).server_env(cpus)


@contextlib.contextmanager
def python_process(
    args: Sequence[str], env: dict[str, str], *, log_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """`python ARGS` in its own process group, stopped (SIGTERM, then SIGKILL) at the end."""
    child = _process.spawn(
        [sys.executable, *args], log_path=log_path, cwd=REPO_ROOT, env={**os.environ, **env}
    )
    try:
        yield child
    finally:
        stop_child(child, what=" ".join(args))


def stop_child(child: subprocess.Popen[bytes], *, what: str) -> None:
    if child.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGTERM)
        try:
            child.wait(SERVER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log(f"{what} did not stop in {SERVER_STOP_TIMEOUT_S:.0f} s; killing it")
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.wait(5)


def http_request(
    url: str, *, method: str = "GET", body: bytes | None = None, timeout_s: float = 10.0
) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def warm_up(url: str, *, method: str, body: bytes | None, count: int = 50) -> None:
    """Send `count` requests (the first one loads the model); each must succeed."""
    for _ in range(count):
        status, payload = http_request(url, method=method, body=body, timeout_s=60.0)
        if status >= 300:
            raise RuntimeError(f"warm-up {method} {url} answered {status}: {payload[:300]!r}")


def ad_bodies(count: int) -> list[bytes]:
    """`POST /predict` bodies: synthetic ads, as a caller would send them."""
    from shared.model.synthetic import generate_ads

    return [
        json.dumps(
            {
                "item_id": ad.item_id,
                "seller_id": ad.seller_id,
                "is_verified_seller": ad.is_verified_seller,
                "name": ad.name,
                "description": ad.description,
                "category": ad.category,
                "images_qty": ad.images_qty,
            }
        ).encode()
        for ad in generate_ads(count).ads
    ]


def _wait_for_port(child: subprocess.Popen[bytes], port: int, log_path: Path, *, what: str) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while not _process.port_accepts(port):
        if child.poll() is not None:
            raise RuntimeError(
                f"{what} exited with code {child.returncode} during start-up:\n"
                f"{_process.tail(log_path)}"
            )
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{what} did not listen on port {port} within "
                f"{SERVER_START_TIMEOUT_S:.0f} s:\n{_process.tail(log_path)}"
            )
        time.sleep(0.05)
