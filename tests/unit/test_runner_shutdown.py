"""Stop signals during the runner's start-up: they cut it short, except a step that must
not be cut half-way, which they outlast. And the shutdown's order and bounds."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from infra._process import free_port
from shared.runner.local import HTTP_DRAIN_S, _Running, shut_down
from shared.runner.shutdown import (
    STOP_SIGNALS,
    Deadline,
    StartUpInterrupted,
    StartUpInterruption,
)
from tests.fakes import fake_services
from tests.waiting import read_first_line_within

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def interruption():
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    interruption = StartUpInterruption()
    interruption.install()
    yield interruption
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def _hang_up_and_let_the_handler_run() -> None:
    os.kill(os.getpid(), signal.SIGHUP)
    time.sleep(0.05)  # the handler runs on the main thread at its next instruction


def test_a_stop_signal_during_start_up_raises_where_start_up_is(interruption):
    with pytest.raises(StartUpInterrupted, match="SIGHUP"):
        _hang_up_and_let_the_handler_run()


def test_a_stop_signal_inside_a_deferred_step_takes_effect_when_the_step_is_over(interruption):
    finished = []

    with pytest.raises(StartUpInterrupted, match="SIGHUP"), interruption.deferred():
        _hang_up_and_let_the_handler_run()
        finished.append("the step")

    assert finished == ["the step"]


def test_a_deferred_step_without_a_signal_raises_nothing(interruption):
    with interruption.deferred():
        pass


# A worker process whose batch outlasts any budget: the interpreter would join its
# executor thread at exit, for the whole minute.
_STUCK_WORKER = """
import sys, time
from concurrent.futures import ThreadPoolExecutor
from shared.runner.processes import run_worker_process

class StuckWorker:
    def __init__(self, services):
        self._batches = ThreadPoolExecutor(1)

    def start(self):
        self._batches.submit(time.sleep, 60)
        print("started", flush=True)

    def is_alive(self):
        return True

    def stop(self, timeout_s):
        return False

sys.exit(run_worker_process("stuck", StuckWorker, needs=()))
"""


def test_a_worker_process_whose_batch_outlasts_the_budget_still_exits_on_time(tmp_path):
    env = {**os.environ, "PORT": str(free_port()), "OPS_HOST": "127.0.0.1"}
    process = subprocess.Popen(
        [sys.executable, "-c", _STUCK_WORKER],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        started = read_first_line_within(process.stdout, timeout_s=20, what="the worker to start")
        assert started.strip() == "started", process.stderr.read()
        process.send_signal(signal.SIGTERM)
        # Well past the 4.5 s budget, well short of the minute the batch would hold it.
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    assert "did not stop in time" in stderr


def test_a_worker_process_stopped_while_its_model_loads_ends_at_once(tmp_path):
    # Each of the model's files a named pipe nobody writes: reading one blocks, as a
    # load from a storage that does not answer would.
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    for name in os.listdir(REPO_ROOT / "var" / "models" / "default"):
        os.mkfifo(model_dir / name)
    env = {**os.environ, "PORT": str(free_port()), "OPS_HOST": "127.0.0.1"}
    env["MODEL_URI"] = str(model_dir)
    process = subprocess.Popen(
        [sys.executable, "-c", _STUCK_WORKER.replace("needs=()", "needs=('model',)")],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    writer = None
    try:
        # Once the load has opened one of the pipes, the stop handler is in place.
        writer = _open_once_read(model_dir, process)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=15)
    finally:
        process.kill()
        if writer is not None:
            os.close(writer)
    assert process.returncode == 0, stderr
    assert "stopped during start-up" in stderr
    assert "started" not in stdout


def _open_once_read(fifo_dir: Path, process: subprocess.Popen, timeout_s: float = 30) -> int:
    """A write end of whichever pipe in `fifo_dir` the process has opened to read: opening
    one without a reader fails (ENXIO), so success means the reader is there. Kept open
    (and unwritten) so that the read goes on blocking."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read()
        for fifo in fifo_dir.iterdir():
            try:
                return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as error:
                if error.errno != errno.ENXIO:
                    raise
        time.sleep(0.05)
    pytest.fail(f"the process opened none of {sorted(p.name for p in fifo_dir.iterdir())}")


_STOPPED_PROCESS = """
from shared.runner.shutdown import StopSignal, exit_with
stop = StopSignal()
stop.install()
print("ready", flush=True)
stop.requested.wait(30)
import numpy, sklearn  # an interpreter shutdown with something to tear down
exit_with(0)
"""


def test_a_stop_signal_during_the_interpreters_shutdown_does_not_change_the_exit_status():
    # The interpreter puts the default handlers back while it shuts down: a second
    # SIGTERM then ended the process as killed (-15) after it had stopped cleanly.
    process = subprocess.Popen(
        [sys.executable, "-c", _STOPPED_PROCESS],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # "already stopping", once a signal
        text=True,
    )
    try:
        assert process.stdout.readline() == "ready\n"
        deadline = time.monotonic() + 30
        while process.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
            time.sleep(0.0002)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 0


class _RecordedStop:
    """A piece of the runner that records how long it was given to stop, and what the
    services' stop flag said by then."""

    def __init__(self, services, stopped: bool = True) -> None:
        self.services, self.stopped = services, stopped
        self.given: list[tuple[float, bool]] = []

    def stop(self, timeout_s: float) -> bool:
        self.given.append((timeout_s, self.services.stopping.is_set()))
        return self.stopped


def test_shutting_down_ends_retry_waits_first_and_gives_http_requests_only_the_drain():
    # Retry waits must end before anything waits on them; requests in flight get a
    # moment, not the whole budget the poll loop's batch may need.
    services = fake_services()
    server, consumer, relay = (_RecordedStop(services) for _ in range(3))
    running = _Running(services, server, consumer, relay)  # type: ignore[arg-type]

    assert shut_down(running, Deadline(30.0))

    [(drain_s, stopping_when_drained)] = server.given
    assert stopping_when_drained and drain_s == HTTP_DRAIN_S
    [(consumer_s, _)] = consumer.given
    assert HTTP_DRAIN_S < consumer_s <= 30.0


def test_shutting_down_says_false_when_the_poll_loop_did_not_stop():
    services = fake_services()
    running = _Running(  # type: ignore[arg-type]
        services,
        _RecordedStop(services),
        _RecordedStop(services, stopped=False),
        _RecordedStop(services),
    )

    assert not shut_down(running, Deadline(30.0))
