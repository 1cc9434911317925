"""Fixtures of the fault tests: consumer processes that a test may SIGKILL.

Every test module here is marked `fault` and `integration` by its own `pytestmark`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shared.settings import Settings
from tests.fault.consumer_process import ConsumerProcess, consumer_environment

StartConsumer = Callable[..., ConsumerProcess]


@pytest.fixture
def start_consumer(settings: Settings, tmp_path: Path) -> Iterator[StartConsumer]:
    """Start `python -m shared.runner.consumer` on the test's settings (plus overrides).

    Whatever is still running when the test ends is killed: only the processes
    this fixture started, by their pid.
    """
    started: list[ConsumerProcess] = []

    def start(**overrides: object) -> ConsumerProcess:
        log_path = tmp_path / f"consumer-{len(started) + 1}.log"
        process = ConsumerProcess(consumer_environment(settings, **overrides), log_path)
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            process.kill()
