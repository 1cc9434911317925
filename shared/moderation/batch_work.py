"""What a batch of `moderation` records still has to make durable, and the failures and
DLQ records it settles on the way (shared/moderation/batch.py runs the batch)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

from shared.bootstrap import Services
from shared.db.dead_letters import DeadLetter
from shared.db.tasks import FailedAttempts, TaskFailure, TaskForProcessing
from shared.errors import PermanentError, TemporaryError, public_reason
from shared.kafka.record import ConsumedRecord
from shared.moderation.dead_letters import EXHAUSTED, PERMANENT, build_dead_letter


class TaskRecord(NamedTuple):
    # A tuple, not a frozen dataclass, whose __init__ costs several times more per record.
    record: ConsumedRecord
    task_id: int
    item_id: int  # as the record names it


@dataclass
class BatchWork:
    """What is still to be made durable, and the attempts counted so far.

    `tasks` are still to be scored. `letters` and `failures` are settled outcomes
    (sorted out by a read, or refused by the model) that only wait to be written, with
    whichever write of the batch comes next: a temporary error later in the attempt
    neither holds them back nor counts them as an attempt.
    """

    tasks: list[TaskRecord]
    letters: list[DeadLetter]
    failures: list[tuple[TaskFailure, DeadLetter]] = field(default_factory=list)
    attempts: dict[int, int] = field(default_factory=dict)
    first_failure_at: dict[int, datetime] = field(default_factory=dict)
    # How long each task has been failing, on two clocks never compared with each other:
    # its row's, on the database's clock (earlier owners' failures included), and this
    # batch's own, from time.monotonic() at the first failure it saw.
    row_failing_for_s: dict[int, float] = field(default_factory=dict)
    failing_since_monotonic: dict[int, float] = field(default_factory=dict)
    # The batch as consumed, for the log lines about the whole of it.
    records: Sequence[ConsumedRecord] = ()

    def log_context(self) -> dict[str, object]:
        """What a log line about the whole batch names: its task when it has one left,
        and where its records are, so that a stuck partition can be told from the others.
        Built only when a line is logged: the usual batch logs nothing."""
        context: dict[str, object] = {}
        if len(task_ids := self.task_ids()) == 1:
            context.update(task_id=task_ids[0], item_id=self.tasks[0].item_id)
        if self.records:
            partitions = sorted({record.partition for record in self.records})
            offsets = [record.offset for record in self.records]
            context.update(
                partition=partitions[0] if len(partitions) == 1 else partitions,
                first_offset=min(offsets),
                last_offset=max(offsets),
                records=len(self.records),
            )
        return context

    @property
    def done(self) -> bool:
        return not self.tasks and not self.letters and not self.failures

    def task_ids(self) -> list[int]:
        """Each task still to be scored, once: two records may name it (a corrupt copy)."""
        return list(dict.fromkeys(task.task_id for task in self.tasks))

    def tasks_as_named(self) -> list[tuple[int, int]]:
        """Each (task_id, item_id) still to be scored, once, as the records name them."""
        return list(dict.fromkeys((task.task_id, task.item_id) for task in self.tasks))

    def count_failure(self, task_id: int, durable: FailedAttempts | None) -> None:
        self.attempts[task_id] = self.attempts.get(task_id, 0) + 1
        self.first_failure_at.setdefault(task_id, datetime.now(UTC))
        self.failing_since_monotonic.setdefault(task_id, time.monotonic())
        if durable is not None:
            self.count_earlier_failures(task_id, durable.count, durable.first_failure_at)
            self.row_failing_for_s[task_id] = durable.failing_for_s

    def count_earlier_failures(
        self, task_id: int, attempts: int, first_failure_at: datetime | None
    ) -> None:
        """Take in what the task's row counts: never fewer attempts, never a later first
        failure than the row's."""
        self.attempts[task_id] = max(self.attempts.get(task_id, 0), attempts)
        if first_failure_at is not None:
            first = self.first_failure_at.get(task_id, first_failure_at)
            self.first_failure_at[task_id] = min(first, first_failure_at)

    def attempts_before(self, task_id: int, row: TaskForProcessing) -> int:
        """The attempts made on the task before the one now running: its row's count, or
        more when attempts of this batch met the database down and live in memory only."""
        return max(row.attempts, self.attempts.get(task_id, 0))

    def out_of_retries(self, task_id: int, limit: int, schedule_s: float) -> bool:
        """`limit` attempts made, and the whole schedule's time gone by since the first.

        The count alone is not enough: a wait cut short (a revoke, a stop, a crash) still
        leaves its attempt on the row, and the next owner retries at once, so attempts
        can pile up in far less than the schedule. A task is given up on only once the
        temporary error has lasted as long as the schedule promises to wait it out.
        """
        if self.attempts.get(task_id, 0) < limit:
            return False
        now = time.monotonic()
        seen_here = now - self.failing_since_monotonic.get(task_id, now)
        return max(self.row_failing_for_s.get(task_id, 0.0), seen_here) >= schedule_s

    def forget_written(self) -> None:
        """Nothing is left to write: every task, letter and failure is durable."""
        self.tasks, self.letters, self.failures = [], [], []


def failure_with_letter(
    services: Services,
    task: TaskRecord,
    row: TaskForProcessing,
    problem: PermanentError,
    attempts: int,
) -> tuple[TaskFailure, DeadLetter]:
    """The task failed for good after `attempts` in all, with the letter that says so."""
    failure = TaskFailure(task_id=row.id, reason=public_reason(problem), attempts=attempts)
    return failure, task_letter(services, task, row, problem, attempts)


def exhausted_failures(
    services: Services, tasks: Sequence[TaskRecord], work: BatchWork, error: TemporaryError
) -> list[tuple[TaskFailure, DeadLetter]]:
    return [
        (_exhausted(task, work, error), _exhausted_letter(services, task, work, error))
        for task in tasks
    ]


def _exhausted(task: TaskRecord, work: BatchWork, error: TemporaryError) -> TaskFailure:
    attempts = work.attempts.get(task.task_id, 0)
    return TaskFailure(
        task_id=task.task_id,
        reason=f"gave up after {attempts} attempts: {public_reason(error)}",
        attempts=attempts,
    )


def task_letter(
    services: Services,
    task: TaskRecord,
    row: TaskForProcessing | None,
    problem: PermanentError,
    attempts: int | None = None,
) -> DeadLetter:
    if attempts is None:
        attempts = 1 if row is None else row.attempts + 1
    return record_letter(
        services,
        task.record,
        problem,
        PERMANENT,
        attempts,
        task.task_id,
        task_exists=row is not None,
        first_failure_at=None if row is None else row.first_failure_at,
    )


def _exhausted_letter(
    services: Services, task: TaskRecord, work: BatchWork, error: TemporaryError
) -> DeadLetter:
    return record_letter(
        services,
        task.record,
        error,
        EXHAUSTED,
        work.attempts.get(task.task_id, 0),
        task.task_id,
        task_exists=True,
        first_failure_at=work.first_failure_at.get(task.task_id),
    )


def record_letter(
    services: Services,
    record: ConsumedRecord,
    error: BaseException,
    error_class: str,
    attempts: int,
    task_id: int | None,
    *,
    task_exists: bool,
    first_failure_at: datetime | None = None,
) -> DeadLetter:
    return build_dead_letter(
        record,
        error=error,
        error_class=error_class,
        attempts=attempts,
        consumer_group=services.settings.kafka_consumer_group,
        task_id=task_id,
        task_exists=task_exists,
        first_failure_at=first_failure_at,
    )
