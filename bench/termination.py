"""SIGTERM (a CI timeout, `kill`) stops the whole bench run, unwinding like Ctrl-C.

Raised as an exception, so that every `finally` stops its servers; one of its own, so
that the runner, which goes on to the next bench past any other exit, stops instead.
"""

from __future__ import annotations

import signal
import threading


class Terminated(SystemExit):
    """The run was sent SIGTERM; the exit code says so (128 + the signal)."""


def exit_cleanly_on_sigterm() -> None:
    """From now on SIGTERM raises `Terminated` in the main thread (unless it is handled)."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _raise_terminated)


def _raise_terminated(signum: int, _frame: object) -> None:
    raise Terminated(128 + signum)
