"""Stop signals during the runner's start-up: they cut it short, except a step that must
not be cut half-way, which they outlast."""

from __future__ import annotations

import os
import signal
import time

import pytest

from shared.runner.shutdown import STOP_SIGNALS, StartUpInterrupted, StartUpInterruption


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
