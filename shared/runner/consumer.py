"""`python -m shared.runner.consumer`: the Kafka poll loop feeding `moderation_consumer`'s
`process_records`, as a process of its own (one per replica; the group shares the partitions)."""

from collections.abc import Sequence

from shared.command_line import take_no_arguments
from shared.runner.processes import run_worker_process
from shared.runner.shutdown import exit_with
from shared.runner.workers import ConsumerWorker, load_consumer_handler


def main(argv: Sequence[str] | None = None) -> int:
    take_no_arguments("python -m shared.runner.consumer", __doc__, argv)
    return run_worker_process(
        "consumer",
        lambda services: ConsumerWorker(services.settings, load_consumer_handler()),
        needs=("database", "kafka", "model"),
    )


if __name__ == "__main__":
    exit_with(main())
