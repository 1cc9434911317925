"""The poll loop as a process supervisor keeps it: a loop that gives up for good (its
`stuck` reason set) is replaced by a new one, on a new client, at once."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from shared.bootstrap import Services
from shared.kafka.poll_loop import PartitionedPollLoop
from tests.integration.wiring import new_poll_loop

log = logging.getLogger(__name__)
WATCH_INTERVAL_S = 0.2
STOP_TIMEOUT_S = 30.0


class SupervisedConsumer:
    def __init__(self, services: Services, rejoin_timeout_s: float) -> None:
        self._services = services
        self._rejoin_timeout_s = rejoin_timeout_s
        self._stop = threading.Event()
        self.loop, self._thread = self._start()
        self.replaced: list[str] = []  # why each replaced loop gave up
        self.failures: list[BaseException] = []  # loops that ended any other way
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()

    def stop(self) -> None:
        self._stop.set()
        self._watcher.join(STOP_TIMEOUT_S)
        if self.failures:
            raise self.failures[0]
        # Only the running loop must stop in time: one that gave up may still be closing
        # a client that cannot reach its coordinator.
        self._thread.join(STOP_TIMEOUT_S)
        if self._thread.is_alive():
            pytest.fail(f"poll loop did not stop within {STOP_TIMEOUT_S:g} s")

    def _start(self) -> tuple[PartitionedPollLoop, threading.Thread]:
        loop = new_poll_loop(self._services, rejoin_timeout_s=self._rejoin_timeout_s)
        thread = threading.Thread(target=self._run, args=(loop,), daemon=True)
        thread.start()
        return loop, thread

    def _run(self, loop: PartitionedPollLoop) -> None:
        try:
            loop.run(self._stop)
        except RuntimeError as error:
            if loop.stuck is None:
                self.failures.append(error)
            # Else its end, as the process running it would exit: the watcher replaced it.
        except BaseException as error:
            self.failures.append(error)

    def _watch(self) -> None:
        while not self._stop.wait(WATCH_INTERVAL_S):
            if self.loop.stuck is not None:
                log.warning("poll loop gave up; starting a new one: %s", self.loop.stuck)
                self.replaced.append(self.loop.stuck)
                self.loop, self._thread = self._start()


@contextmanager
def supervised_consumer(
    services: Services, rejoin_timeout_s: float
) -> Iterator[SupervisedConsumer]:
    supervisor = SupervisedConsumer(services, rejoin_timeout_s)
    try:
        yield supervisor
    finally:
        supervisor.stop()
