"""Which function lives where: the table the runner, the image and the benches read.

The packager bundles every folder of functions/ that has a main.py;
tests/unit/test_runner_package.py holds the two to the same folders."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS_DIR = REPO_ROOT / "functions"


@dataclass(frozen=True, slots=True)
class FunctionTarget:
    """A deployable entry point: `functions/<folder>/main.py`, function `target`."""

    target: str
    folder: str
    # The runner's path for an HTTP function; None for the consumer (fed by the poll loop)
    # and the relay (a thread of the runner).
    path: str | None
    # The path ends in a parameter (`/moderation_result/{task_id}`), so subpaths are its own.
    takes_subpath: bool = False
    # gunicorn threads per worker when deployed (functions-framework's THREADS). Its own
    # default, 4 per CPU, would outgrow the pool's 10 connections on a larger machine, and
    # a request waiting for one past DB_CONNECT_TIMEOUT_S gets a 503 (in the push
    # consumer, a retry schedule run for no outage). 1 would switch gunicorn to its sync
    # worker, which drops keep-alive and serves one request at a time (predict's p99 went
    # to 14-38 ms on it), so every HTTP function is threaded.
    # - predict takes 2: its requests hold the GIL, so more threads only contend for it
    #   (bench/bench_http.py; bench/README.md gives the rates on other counts).
    # - simple_predict takes 4: a request also waits for its lookup, which another thread
    #   can use. moderation_result, one lookup per request too, takes the same (not
    #   measured on its own).
    # - async_predict takes 16: a request mostly waits (an INSERT, the broker's ack, an
    #   UPDATE, each holding a connection briefly); with 4 threads one worker accepted
    #   92-96 % of 500/s.
    # - The push consumer takes 8, below the pool's 10: each request holds a connection
    #   through its batch. The relay, called once a minute at most, takes 2.
    threads: int = 4

    def server_env(self, cpu_count: int) -> dict[str, str]:
        """functions-framework's gunicorn settings for this function: WORKERS and THREADS."""
        return {"WORKERS": str(cpu_count), "THREADS": str(self.threads)}

    @property
    def source(self) -> Path:
        return FUNCTIONS_DIR / self.folder / "main.py"


HTTP_FUNCTIONS = (
    FunctionTarget("predict", "predict", "/predict", threads=2),
    FunctionTarget("simple_predict", "predict", "/simple_predict", threads=4),
    FunctionTarget("async_predict", "async_predict", "/async_predict", threads=16),
    FunctionTarget(
        "moderation_result",
        "moderation_result",
        "/moderation_result",
        takes_subpath=True,
        threads=4,
    ),
)
CONSUMER_FUNCTION = FunctionTarget("moderation_consumer", "moderation_consumer", None, threads=8)
# Called by a scheduler where only functions run; the runner runs the relay as a thread.
RELAY_FUNCTION = FunctionTarget("outbox_relay", "outbox_relay", None, threads=2)
ALL_FUNCTIONS = (*HTTP_FUNCTIONS, CONSUMER_FUNCTION, RELAY_FUNCTION)


def function_folders() -> list[str]:
    """One deployable bundle per folder (predict holds two targets)."""
    return sorted({function.folder for function in ALL_FUNCTIONS})


def find_target(target: str) -> FunctionTarget:
    for function in ALL_FUNCTIONS:
        if function.target == target:
            return function
    known = ", ".join(function.target for function in ALL_FUNCTIONS)
    raise LookupError(f"unknown function target {target!r}; expected one of {known}")
