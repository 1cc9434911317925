"""PostgreSQL stopped for 10 s while the consumer works: it retries, and loses or
dead-letters nothing that would have succeeded."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from shared.moderation.batch import BatchReport, process_moderation_batch
from tests.fault.load import create_published_tasks, dead_letter_rows, produce_tasks, status_counts
from tests.fault.waiting import wait_for
from tests.integration.database_rows import seed_ads
from tests.integration.kafka_records import records_on
from tests.integration.wiring import running_consumer, wired_services
from tests.must_run import skip_or_fail

pytestmark = [pytest.mark.fault, pytest.mark.integration]

OUTAGE_S = 10.0
TASKS = 600
FEED_CHUNKS = 20
FEED_INTERVAL_S = 1.0  # the records arrive over 20 s: before, during and after the outage
# Waits of 3, 6 and 12 s between the four attempts: a batch failing as PostgreSQL stops
# has its last attempt 21 s later, with room for a slow stop and start on a loaded machine
# (2 s gave 14 s, which a start slower than ~3 s would have turned into failed tasks).
RETRY_BASE_DELAY_S = 3.0


class TaskFeeder:
    """Produces the tasks' records in chunks on a thread, as traffic would arrive."""

    def __init__(self, settings, tasks: list[tuple[int, int]]) -> None:
        self._settings = settings
        size = -(-len(tasks) // FEED_CHUNKS)
        self._chunks = [tasks[i : i + size] for i in range(0, len(tasks), size)]
        self._thread = threading.Thread(target=self._feed, name="task-feeder", daemon=True)
        self._stop = threading.Event()
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float) -> None:
        """Stop feeding, if it has not finished, and wait for the thread."""
        self._stop.set()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            pytest.fail(f"the task feeder did not stop within {timeout_s:g} s")

    def join(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            pytest.fail(f"the task feeder did not finish within {timeout_s:g} s")
        if self.error is not None:
            raise self.error

    def _feed(self) -> None:
        try:
            for chunk in self._chunks:
                produce_tasks(self._settings, chunk)
                if self._stop.wait(FEED_INTERVAL_S):
                    return
        except BaseException as error:  # reported on the test's thread by join()
            self.error = error


def test_postgres_stopped_for_10_s_under_load_is_retried_and_every_task_completes(
    infra, settings, caplog
):
    if infra.postgres is None:
        skip_or_fail("DATABASE_URL names an external PostgreSQL, which this test cannot stop")
    outage_settings = settings.model_copy(update={"retry_base_delay_s": RETRY_BASE_DELAY_S})
    caplog.set_level(logging.WARNING, logger="shared.retry")
    reports: list[BatchReport] = []
    with wired_services(outage_settings) as services:
        tasks = create_published_tasks(services, seed_ads(services, TASKS))

        def record_report(records):
            report = process_moderation_batch(services, records)
            reports.append(report)
            return report

        feeder = TaskFeeder(outage_settings, tasks)
        with running_consumer(services, record_report):
            feeder.start()
            try:
                wait_for(
                    lambda: sum(r.completed for r in reports) > 0,
                    timeout_s=30,
                    what="the first tasks completed before the outage",
                )
                infra.postgres.stop()
                time.sleep(OUTAGE_S)
                infra.postgres.start()
                feeder.join(timeout_s=60)
            finally:
                # Before anything else: the consumer's shutdown and later tests need it.
                if not infra.postgres.is_running():
                    infra.postgres.start()
                feeder.stop(timeout_s=60)  # at once if the test failed; finished otherwise
            wait_for(
                lambda: status_counts(services)["completed"] == TASKS,
                timeout_s=90,
                what=f"all {TASKS} tasks completed after PostgreSQL came back",
                seen=lambda: str(status_counts(services)),
            )

        assert status_counts(services) == {"completed": TASKS}
        assert sum(r.retries for r in reports) > 0, "no batch was retried: the outage was missed"
        assert sum(r.failed for r in reports) == 0
        # Retried as the outage it is (DatabaseUnavailable), not as a bug: UnexpectedFailure
        # is a TemporaryError too, retried on the same schedule, so the counts above
        # cannot tell the two apart.
        retried_for = {
            getattr(record, "error", "").split("(")[0]
            for record in caplog.records
            if record.getMessage() == "temporary error, retrying"
        }
        assert retried_for == {"DatabaseUnavailable"}, retried_for
        assert not [r for r in caplog.records if "unexpected error" in r.getMessage()]
        assert dead_letter_rows(services) == 0
        assert records_on(settings, settings.kafka_dlq_topic) == 0
