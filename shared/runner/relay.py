"""`python -m shared.runner.relay`: the outbox relay as a process of its own (any number may
run: rows are claimed with SKIP LOCKED)."""

import sys

from shared.runner.processes import run_worker_process
from shared.runner.workers import RelayWorker


def main() -> int:
    return run_worker_process("relay", RelayWorker, needs=("database", "kafka"))


if __name__ == "__main__":
    sys.exit(main())
