"""Two consumers share the group's partitions; one is SIGKILLed and the other takes over."""

from __future__ import annotations

import pytest

from tests.fault.load import (
    ConsumerGroupProbe,
    create_published_tasks,
    dead_letter_rows,
    produce_tasks,
    status_counts,
)
from tests.fault.waiting import wait_for
from tests.integration.helpers import records_on, seed_ads, wired_services

pytestmark = [pytest.mark.fault, pytest.mark.integration]

TASKS_PER_WAVE = 1500
BATCH_SIZE = 50


def _shared_by_two(assignment: list[set[int]], partitions: set[int]) -> bool:
    return len(assignment) == 2 and all(assignment) and set().union(*assignment) == partitions


def test_killing_one_of_two_consumers_moves_its_partitions_to_the_other_and_all_tasks_complete(
    settings, start_consumer
):
    partitions = set(range(settings.kafka_moderation_partitions))
    with wired_services(settings) as services, ConsumerGroupProbe(settings) as group:
        tasks = create_published_tasks(services, seed_ads(services, 2 * TASKS_PER_WAVE))
        first_wave, second_wave = tasks[:TASKS_PER_WAVE], tasks[TASKS_PER_WAVE:]
        doomed = start_consumer(consumer_batch_size=BATCH_SIZE)
        survivor = start_consumer(consumer_batch_size=BATCH_SIZE)
        both = [doomed, survivor]
        wait_for(
            lambda: _shared_by_two(group.assignment(), partitions),
            timeout_s=60,
            what="both consumers to own partitions of the group",
            seen=lambda: str(group.assignment()),
            watch=both,
        )
        produce_tasks(settings, first_wave)
        wait_for(
            lambda: status_counts(services)["completed"] > 0,
            timeout_s=30,
            what="the first tasks completed",
            watch=both,
        )

        doomed.kill()
        # Produced after the kill: the dead member's partitions get records only the
        # survivor can complete, once the group has given it those partitions.
        produce_tasks(settings, second_wave)
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
