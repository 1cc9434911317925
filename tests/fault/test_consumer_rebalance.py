"""Two consumers share the group's partitions; one is SIGKILLed and the other takes over."""

from __future__ import annotations

import time

import pytest

from tests.fault.load import (
    LOCK_PROOF_STATEMENT_TIMEOUT_MS,
    ConsumerGroupProbe,
    create_published_tasks,
    dead_letter_rows,
    pending_among,
    produce_tasks,
    reads_of_ads_blocked,
    status_counts,
)
from tests.fault.waiting import wait_for
from tests.integration.database_rows import seed_ads
from tests.integration.kafka_records import records_on
from tests.integration.wiring import wired_services

pytestmark = [pytest.mark.fault, pytest.mark.integration]

TASKS_PER_WAVE = 1500
# Past the consumers' auto-commit interval (1 s): what they would commit, they have.
AUTO_COMMIT_S = 1.5
BATCH_SIZE = 50


def _shared_by_two(assignment: list[set[int]], partitions: set[int]) -> bool:
    return len(assignment) == 2 and all(assignment) and set().union(*assignment) == partitions


# Its waits, each bounded, add up to ~300 s at worst, plus three flushes of up to 15 s and
# the consumers' start-up: past pytest's default 300 s, a slow machine would get a stack
# dump instead of the message of the wait that gave up.
@pytest.mark.timeout(420)
def test_killing_one_of_two_consumers_moves_its_partitions_to_the_other_and_all_tasks_complete(
    settings, start_consumer
):
    partitions = set(range(settings.kafka_moderation_partitions))
    with wired_services(settings) as services, ConsumerGroupProbe(settings) as group:
        tasks = create_published_tasks(services, seed_ads(services, 3 * TASKS_PER_WAVE))
        first_wave, in_flight_wave, after_the_kill = (
            tasks[start : start + TASKS_PER_WAVE] for start in range(0, len(tasks), TASKS_PER_WAVE)
        )
        doomed = start_consumer(
            consumer_batch_size=BATCH_SIZE,
            db_statement_timeout_ms=LOCK_PROOF_STATEMENT_TIMEOUT_MS,
        )
        survivor = start_consumer(
            consumer_batch_size=BATCH_SIZE,
            db_statement_timeout_ms=LOCK_PROOF_STATEMENT_TIMEOUT_MS,
        )
        both = [doomed, survivor]
        wait_for(
            lambda: _shared_by_two(group.assignment(), partitions),
            timeout_s=60,
            what="both consumers to own partitions of the group",
            seen=lambda: str(group.assignment()),
            watch=both,
        )
        produce_tasks(settings, first_wave)
        # Both members commit offsets of their own: the survivor then has to resume the
        # dead one's partitions from what it committed, not from the start of the topic.
        wait_for(
            lambda: group.unconsumed_records() == 0,
            timeout_s=60,
            what="the first wave completed and its offsets committed",
            seen=lambda: f"{group.unconsumed_records()} record(s) behind",
            watch=both,
        )
        # The next wave's batches wait on PostgreSQL when the member dies, past an offset
        # commit: had it committed offsets before its tasks were durable, the survivor
        # would resume past them, and they would never complete.
        with reads_of_ads_blocked(settings.database_url) as waiting:
            produce_tasks(settings, in_flight_wave)
            # One batch a partition, so the doomed member's too.
            wait_for(
                lambda: waiting() >= len(partitions),
                timeout_s=10,
                what="a batch of each partition waiting to read its ads",
                seen=lambda: f"{waiting()} waiting",
                watch=both,
            )
            time.sleep(AUTO_COMMIT_S)
            assert pending_among(services, in_flight_wave) == len(in_flight_wave)
            doomed.kill()
        # Produced after the kill: the dead member's partitions get records only the
        # survivor can complete, once the group has given it those partitions.
        produce_tasks(settings, after_the_kill)
        wait_for(
            lambda: group.assignment() == [partitions],
            timeout_s=60,
            what=f"the survivor to own all partitions {sorted(partitions)}",
            seen=lambda: str(group.assignment()),
            watch=[survivor],
        )
        wait_for(
            lambda: status_counts(services)["completed"] == len(tasks),
            timeout_s=60,
            what=f"all {len(tasks)} tasks completed by the survivor",
            seen=lambda: f"{status_counts(services)}\n{survivor.log_tail()}",
            watch=[survivor],
        )
        wait_for(
            lambda: group.unconsumed_records() == 0,
            timeout_s=30,
            what="the group to commit the end of every partition",
            seen=lambda: f"{group.unconsumed_records()} record(s) behind",
            watch=[survivor],
        )
        exit_code = survivor.stop()

        assert status_counts(services) == {"completed": len(tasks)}
        assert dead_letter_rows(services) == 0
        assert records_on(settings, settings.kafka_dlq_topic) == 0
        assert exit_code == 0, survivor.log_tail()
