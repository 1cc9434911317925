"""The command line of the entry points configured by the environment alone: `--help` says
what the command does and where its settings come from, and any other argument is refused
(exit 2) rather than ignored while the command does its real work."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

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
