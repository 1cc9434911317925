"""The consumer process SIGKILLed mid-batch, again and again: nothing lost, nothing twice."""

from __future__ import annotations

import time

import pytest

from tests.fault.consumer_process import ConsumerProcess
from tests.fault.load import (
    LOCK_PROOF_STATEMENT_TIMEOUT_MS,
    ConsumerGroupProbe,
    Outcome,
    create_published_tasks,
    dead_letter_rows,
    outcomes,
    produce_tasks,
    reads_of_ads_blocked,
    status_counts,
)
from tests.fault.waiting import wait_for
from tests.integration.database_rows import seed_ads
from tests.integration.kafka_records import records_on
from tests.integration.wiring import wired_services

pytestmark = [pytest.mark.fault, pytest.mark.integration]

KILLS = 3
TASKS = 5000
# Each consumer is started with a fresh share of the records on top of what the one
# before it left, so the last one has work of its own however fast the others were.
# The killed ones get the most: each is killed only once Kafka holds an offset it
# committed (auto-committed once a second), and must still have work in flight then.
FINAL_SHARE = 200
KILLED_SHARE = (TASKS - FINAL_SHARE) // KILLS
# Past the consumer's auto-commit interval (1 s): what it would commit, it has.
AUTO_COMMIT_S = 1.5
# Small batches: many commits in flight at any moment, so the last kill, which comes once
# a batch completed after an offset commit, still finds batches to block mid-read.
BATCH_SIZE = 5


# How often the last kill looks for tasks completed past the committed offsets before
# giving up; the auto-commit closes that window within a second of the last completion.
WINDOW_TRIES = 3
# After a SIGSTOP, for an offset commit already sent to land before the offsets are read
# (nothing new can be sent): a busy broker may take a while to record one.
COMMIT_IN_FLIGHT_S = 1.0


# Its waits, each bounded, add up to ~440 s at worst: past pytest's default 300 s, a slow
# machine would get a stack dump instead of the message of the wait that gave up.
@pytest.mark.timeout(540)
def test_consumer_sigkilled_three_times_mid_batch_completes_each_of_5000_tasks_exactly_once(
    settings, start_consumer
):
    with wired_services(settings) as services, ConsumerGroupProbe(settings) as group:
        tasks = create_published_tasks(services, seed_ads(services, TASKS))
        shares = [
            tasks[start : start + KILLED_SHARE]
            for start in range(0, KILLS * KILLED_SHARE, KILLED_SHARE)
        ] + [tasks[KILLS * KILLED_SHARE :]]
        # Each finished task as first seen after a kill: no later consumer may rewrite it.
        first_seen_finished: dict[int, Outcome] = {}

        # Records each consumer found already completed, redelivered after a kill.
        redelivered = 0.0
        for kill, share in enumerate(shares[:KILLS], start=1):
            produce_tasks(settings, share)
            behind_at_start = group.unconsumed_records()
            consumer = start_consumer(
                consumer_batch_size=BATCH_SIZE,
                db_statement_timeout_ms=LOCK_PROOF_STATEMENT_TIMEOUT_MS,
            )
            # Killed once Kafka holds an offset this consumer committed, so the next one
            # resumes from there.
            wait_for(
                lambda behind=behind_at_start: group.unconsumed_records() < behind,
                timeout_s=60,
                what=f"the consumer to commit an offset before kill {kill}",
                seen=consumer.log_tail,
                watch=[consumer],
            )
            if kill < KILLS:
                # With batches waiting on PostgreSQL, past an offset commit: a consumer
                # that committed offsets before its tasks were durable would skip them
                # for good, and the test would wait in vain for them to complete.
                with reads_of_ads_blocked(settings.database_url) as waiting:
                    _wait_for_a_blocked_batch(waiting, consumer, kill)
                    time.sleep(AUTO_COMMIT_S)
                    redelivered += consumer.metric("moderation_tasks_total", outcome="duplicate")
                    consumer.kill()
            else:
                produced = sum(map(len, shares[:kill]))
                redelivered += _kill_past_a_database_commit(
                    services, settings, group, consumer, produced
                )
            # Work was left in flight: more pending than the shares not yet produced.
            unproduced = sum(map(len, shares[kill:]))
            counts = status_counts(services)
            assert counts["pending"] > unproduced, f"kill {kill} found all produced done: {counts}"
            for task_id, outcome in outcomes(services, finished_only=True).items():
                first_seen_finished.setdefault(task_id, outcome)
        produce_tasks(settings, shares[KILLS])
        final = start_consumer(
            consumer_batch_size=BATCH_SIZE,
            db_statement_timeout_ms=LOCK_PROOF_STATEMENT_TIMEOUT_MS,
        )
        wait_for(
            lambda: status_counts(services)["completed"] == TASKS,
            timeout_s=90,
            what=f"all {TASKS} tasks completed after the last restart",
            seen=lambda: f"{status_counts(services)}\n{final.log_tail()}",
            watch=[final],
        )
        # Drained: every redelivered record handled and its offset committed.
        wait_for(
            lambda: group.unconsumed_records() == 0,
            timeout_s=30,
            what="the consumer group to commit the end of every partition",
            seen=lambda: f"{group.unconsumed_records()} record(s) behind",
            watch=[final],
        )
        redelivered += final.metric("moderation_tasks_total", outcome="duplicate")
        exit_code = final.stop()

        # Redelivered records already completed: the last kill fell between a batch's
        # database commit and its offset commit (auto-committed once a second), the
        # window this test is about, checked before that kill. Counted over every consumer.
        assert redelivered > 0
        results = outcomes(services)
        assert sorted(results) == sorted(task_id for task_id, _ in tasks)
        assert {result.status for result in results.values()} == {"completed"}
        # One attempt each: no kill left a task counted as failed, or processed twice.
        assert all(result.attempts == 1 for result in results.values())
        # Finished before a kill, and rewritten by none of the later consumers.
        rewritten = [
            task_id for task_id, before in first_seen_finished.items() if results[task_id] != before
        ]
        assert rewritten == []
        assert dead_letter_rows(services) == 0
        assert records_on(settings, settings.kafka_dlq_topic) == 0
        assert exit_code == 0, final.log_tail()


def _wait_for_a_blocked_batch(waiting, consumer: ConsumerProcess, kill: int) -> None:
    wait_for(
        lambda: waiting() > 0,
        timeout_s=10,
        what=f"a batch waiting to read its ads before kill {kill}",
        watch=[consumer],
    )


def _kill_past_a_database_commit(
    services, settings, group: ConsumerGroupProbe, consumer: ConsumerProcess, produced: int
) -> float:
    """Kill `consumer` mid-batch, with tasks completed in the database whose offsets Kafka
    does not hold yet: the next consumer is redelivered them and must leave them as they
    are. Frozen first (SIGSTOP), so no offset commit can close that window between the
    check and the kill. Returns the duplicates it had counted."""
    for _ in range(WINDOW_TRIES):
        done = status_counts(services)["completed"]
        wait_for(
            lambda done=done: status_counts(services)["completed"] > done,
            timeout_s=20,
            what="a batch completed before the last kill",
            seen=consumer.log_tail,
            watch=[consumer],
        )
        with reads_of_ads_blocked(settings.database_url) as waiting:
            _wait_for_a_blocked_batch(waiting, consumer, KILLS)
            duplicates = consumer.metric("moderation_tasks_total", outcome="duplicate")
            consumer.freeze()
            time.sleep(COMMIT_IN_FLIGHT_S)
            committed = produced - group.unconsumed_records()
            if status_counts(services)["completed"] > committed:
                consumer.kill()
                return duplicates
            consumer.thaw()
    pytest.fail(
        f"in {WINDOW_TRIES} tries, the last kill never found a task completed past the"
        " committed offsets: the auto-commit closed the window each time"
    )
