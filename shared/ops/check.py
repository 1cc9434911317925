"""`python -m shared.ops.check database kafka`: the readiness checks from the command line,
for the health check of a container that serves no HTTP (the one-shot set-up jobs)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from shared.bootstrap import build_services
from shared.ops.health import CHECKS, check_readiness
from shared.ops.seconds import positive_seconds
from shared.settings import MAX_DURATION_S, InvalidSettings

# A command starts cold: its model check loads the model, scikit-learn's imports
# included, which took 3-5 s on a busy 2-core machine, past the 3 s that a probe of a
# running process (whose model is loaded) allows. The database and Kafka checks keep
# their own shorter deadlines within it.
DEFAULT_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class CheckCommand:
    names: list[str]
    timeout_s: float


def parse_check_command(argv: Sequence[str] | None = None) -> CheckCommand:
    """The checks the command line names (all of them when it names none), and its deadline."""
    parser = argparse.ArgumentParser(prog="python -m shared.ops.check")
    # No `choices`: with nargs="*", Python 3.11's argparse refuses the empty default too.
    parser.add_argument(
        "names",
        nargs="*",
        metavar="check",
        help=f"any of {', '.join(sorted(CHECKS))}; default: all",
    )
    parser.add_argument(
        "--timeout",
        type=positive_seconds(MAX_DURATION_S),
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help=f"how long to wait for every check to answer (default {DEFAULT_TIMEOUT_S:g})",
    )
    args = parser.parse_args(argv)
    if unknown := sorted(set(args.names) - set(CHECKS)):
        parser.error(f"unknown check {', '.join(unknown)}: choose from {', '.join(sorted(CHECKS))}")
    return CheckCommand(names=args.names or sorted(CHECKS), timeout_s=args.timeout)


def main(argv: Sequence[str] | None = None) -> int:
    command = parse_check_command(argv)
    try:
        services = build_services()
    except InvalidSettings as error:
        print(f"settings: FAILED: {error}")
        return 1
    deadline = time.monotonic() + command.timeout_s
    try:
        results = check_readiness(services, timeout_s=command.timeout_s, names=command.names)
        # Said before the clients close: a check still connecting holds the pool's close
        # up to DB_CONNECT_TIMEOUT_S, past the --timeout a probe was promised.
        for name, result in results.items():
            print(f"{name}: {'ok' if result.ok else 'FAILED'}: {result.detail}", flush=True)
    finally:
        services.close(lambda: max(0.1, deadline - time.monotonic()))
    return 0 if all(result.ok for result in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
