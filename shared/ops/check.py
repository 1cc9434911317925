"""`python -m shared.ops.check database kafka`: the readiness checks from the command line,
for the health check of a container that serves no HTTP (the one-shot set-up jobs)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from shared.bootstrap import build_services
from shared.ops.health import CHECKS, check_readiness


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.ops.check")
    parser.add_argument("names", nargs="*", choices=sorted(CHECKS), help="default: all")
    args = parser.parse_args(argv)
    names = args.names or sorted(CHECKS)
    services = build_services()
    try:
        results = check_readiness(services, names=names)
    finally:
        services.close()
    for name, result in results.items():
        print(f"{name}: {'ok' if result.ok else 'FAILED'}: {result.detail}")
    return 0 if all(result.ok for result in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
