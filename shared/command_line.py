"""The command line of the entry points configured by the environment alone: `--help` says
what the command does and where its settings come from, and any other argument is refused
(exit 2) rather than ignored while the command does its real work. And how the one-shot
commands (migrations, prune, republish) are stopped."""

from __future__ import annotations

import argparse
import signal
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

SETTINGS_NOTE = "Takes no arguments: every setting comes from the environment (README, Settings)."


def take_no_arguments(prog: str, doc: str | None, argv: Sequence[str] | None = None) -> None:
    """Exit 0 after printing usage on --help, 2 on any argument; return otherwise.

    `doc` is the module's docstring, whose first paragraph describes the command."""
    summary = (doc or "").strip().split("\n\n", 1)[0]
    parser = argparse.ArgumentParser(
        prog=prog,
        description=summary,
        epilog=SETTINGS_NOTE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.parse_args(argv)


class Terminated(KeyboardInterrupt):
    """SIGTERM, taken as Ctrl-C: a Job stopped mid-way ends its statement too (psycopg
    cancels it; pgmigrate's ends, rolled back, before the exception reaches Python),
    instead of leaving it to run on, and commit, in the server after the command is gone."""


@contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    """Within the block, SIGTERM raises `Terminated`."""

    def terminate(_signum: int, _frame: object) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def stopped_status(stop: KeyboardInterrupt) -> int:
    """The exit status of a command stopped by a signal: 143 for SIGTERM, 130 for Ctrl-C."""
    return 143 if isinstance(stop, Terminated) else 130
