"""`python -m shared.ops.check database kafka`: the readiness checks from the command line,
for the health check of a container that serves no HTTP (the one-shot set-up jobs)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from shared.bootstrap import build_services
from shared.ops.health import CHECKS, check_readiness
from shared.settings import InvalidSettings


def check_names(argv: Sequence[str] | None = None) -> list[str]:
    """The checks the command line names, all of them when it names none."""
    parser = argparse.ArgumentParser(prog="python -m shared.ops.check")
    # No `choices`: with nargs="*", Python 3.11's argparse refuses the empty default too.
    parser.add_argument(
        "names",
        nargs="*",
        metavar="check",
        help=f"any of {', '.join(sorted(CHECKS))}; default: all",
    )
    names = parser.parse_args(argv).names
    if unknown := sorted(set(names) - set(CHECKS)):
        parser.error(f"unknown check {', '.join(unknown)}: choose from {', '.join(sorted(CHECKS))}")
    return names or sorted(CHECKS)


def main(argv: Sequence[str] | None = None) -> int:
    names = check_names(argv)
    try:
        services = build_services()
    except InvalidSettings as error:
        print(f"settings: FAILED: {error}")
        return 1
    try:
        results = check_readiness(services, names=names)
    finally:
        services.close()
    for name, result in results.items():
        print(f"{name}: {'ok' if result.ok else 'FAILED'}: {result.detail}")
    return 0 if all(result.ok for result in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
