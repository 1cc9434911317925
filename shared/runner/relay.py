"""`python -m shared.runner.relay`: the outbox relay as a process of its own (any number may
run: rows are claimed with SKIP LOCKED)."""

from collections.abc import Sequence

from shared.command_line import take_no_arguments
from shared.runner.processes import run_worker_process
from shared.runner.shutdown import exit_with
from shared.runner.workers import RelayWorker


def main(argv: Sequence[str] | None = None) -> int:
    take_no_arguments("python -m shared.runner.relay", __doc__, argv)
    return run_worker_process("relay", RelayWorker, needs=("database", "kafka"))


if __name__ == "__main__":
    exit_with(main())
