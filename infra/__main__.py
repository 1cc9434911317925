"""`python -m infra up|down`: start or stop the development Kafka and PostgreSQL.

`up` prints `export ...` lines on stdout, so `eval "$(make -s infra-up)"` points
the shell at them; everything else goes to stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from infra import local_stack
from infra.kafka_jars import MissingTool
from shared.settings import KAFKA_ACCOUNT_AND_TLS_SETTINGS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down"])
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path(os.environ.get("INFRA_STATE_DIR", local_stack.STATE_DIR)),
        help="data, logs and pids of both servers (env INFRA_STATE_DIR; default var/infra)",
    )
    parser.add_argument(
        "--kafka-port",
        type=int,
        default=int(os.environ.get("INFRA_KAFKA_PORT", local_stack.DEFAULT_KAFKA_PORT)),
        help="preferred Kafka port, another free one if taken (env INFRA_KAFKA_PORT; default 9092)",
    )
    parser.add_argument(
        "--postgres-port",
        type=int,
        default=int(os.environ.get("INFRA_POSTGRES_PORT", local_stack.DEFAULT_POSTGRES_PORT)),
        help="preferred PostgreSQL port, another if taken (env INFRA_POSTGRES_PORT; default 5432)",
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "down":
            local_stack.down(args.state_dir)
            return 0
        stack = local_stack.up(
            args.state_dir, kafka_port=args.kafka_port, postgres_port=args.postgres_port
        )
    except MissingTool as exc:
        print(f"infra {args.command}: {exc}", file=sys.stderr)
        return 1
    except RuntimeError as exc:
        print(f"infra {args.command} failed: {exc}", file=sys.stderr)
        return 1
    print("\n".join(shell_lines(stack, os.environ)))
    return 0


def shell_lines(stack: local_stack.LocalStack, environ: Mapping[str, str]) -> list[str]:
    """The lines `eval` runs: point the shell's settings at this stack, and at nothing else.

    Settings read a variable in any case, so the same setting in another case
    (`database_url`) would compete with the exported one; those spellings are unset too.
    """
    exported = {
        "KAFKA_BOOTSTRAP_SERVERS": stack.kafka_bootstrap_servers,
        "DATABASE_URL": stack.database_url,
        # This broker's own port takes plaintext: the Kafka security settings a shell may
        # hold for another cluster would keep everything started from it off this broker.
        "KAFKA_SECURITY_PROTOCOL": "plaintext",
    }
    dropped = {name.upper() for name in KAFKA_ACCOUNT_AND_TLS_SETTINGS}
    other_spellings = sorted(
        variable
        for variable in environ
        if variable != variable.upper() and variable.upper() in exported.keys() | dropped
    )
    return [
        *(f"export {name}={value}" for name, value in exported.items()),
        f"unset {' '.join([*sorted(dropped), *other_spellings])}",
    ]


if __name__ == "__main__":
    sys.exit(main())
