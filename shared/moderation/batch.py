"""Processing a batch of `moderation` records into verdicts, failures and DLQ records.

The contract with the caller (the poll loop or the CloudEvent entry point): when
`process_moderation_batch` returns, every record of the batch is durable in
PostgreSQL (completed, failed, dead-lettered or a known duplicate), so its offset
may be stored. If it raises, nothing about the batch may be acknowledged.

An attempt is two round trips in the normal case: one query reads the tasks with
their ads, one model call scores them, and one UPDATE, committing on its own,
writes the verdicts. When an attempt also fails tasks or dead-letters records, its
writes run as one transaction instead, so each write is all or nothing. Only a task
this attempt moved out of pending is counted and dead-lettered as its own: another
consumer may finish one meanwhile (see shared/db/tasks.py).

What the read sorts out (a redelivered finished task, a record naming no task or another
ad than its task's, a task whose ad is gone) and what the model refuses, or fails on
while it scores the rest of the batch, is settled there and then: it is no longer
retried, and it is written with the batch's next write, whichever that is. A temporary
error leaves the rest unwritten; the attempt is counted on the rows of the tasks still
to be scored (those alone, so a corrupt copy never counts against a real task), and the
batch is retried on the shared 5/10/20 s schedule. When the schedule runs out, the
transaction that fails the tasks reads them first, so what no read got to sort out (the
database was down all along) is sorted out then, not failed. The wait blocks only the
caller's thread, which the poll loop runs per partition.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

import numpy as np

from shared.bootstrap import Model, Services, ShutdownRequested
from shared.db.dead_letters import DeadLetter, StoredDeadLetter
from shared.db.tasks import (
    TaskFailure,
    TaskForProcessing,
)
from shared.db.transaction import Transaction
from shared.domain import BatchVerdicts
from shared.errors import (
    AdNotFound,
    DatabaseUnavailable,
    InvalidFeatures,
    MalformedMessage,
    ModelFailedOnAd,
    PermanentError,
    TaskNotFound,
    TemporaryError,
)
from shared.kafka.envelope import TaskMessage, parse_canonical_batch, parse_task_message
from shared.kafka.record import ConsumedRecord
from shared.moderation.dead_letters import (
    EXHAUSTED,
    PERMANENT,
    build_dead_letter,
    publish_dead_letters,
)
from shared.retry import temporary_error_policy

log = logging.getLogger(__name__)


@dataclass
class BatchReport:
    records: int = 0
    completed: int = 0
    failed: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    retries: int = 0


class _Scored(NamedTuple):
    task_ids: list[int]
    verdicts: BatchVerdicts  # in the order of task_ids


class _Task(NamedTuple):
    # A tuple, not a frozen dataclass, whose __init__ costs several times more per record.
    record: ConsumedRecord
    task_id: int
    item_id: int  # as the record names it


@dataclass
class _Work:
    """What is still to be made durable, and the attempts counted so far.

    `tasks` are still to be scored. `letters` and `failures` are settled outcomes
    (sorted out by a read, or refused by the model) that only wait to be written, with
    whichever write of the batch comes next: a temporary error later in the attempt
    neither holds them back nor counts them as an attempt.
    """

    tasks: list[_Task]
    letters: list[DeadLetter]
    failures: list[tuple[TaskFailure, DeadLetter]] = field(default_factory=list)
    attempts: dict[int, int] = field(default_factory=dict)
    first_failure_at: dict[int, datetime] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return not self.tasks and not self.letters and not self.failures

    def task_ids(self) -> list[int]:
        """Each task still to be scored, once: two records may name it (a corrupt copy)."""
        return list(dict.fromkeys(task.task_id for task in self.tasks))

    def tasks_as_named(self) -> list[tuple[int, int]]:
        """Each (task_id, item_id) still to be scored, once, as the records name them."""
        return list(dict.fromkeys((task.task_id, task.item_id) for task in self.tasks))

    def count_failure(self, task_id: int, durable: tuple[int, datetime] | None) -> int:
        count = self.attempts.get(task_id, 0) + 1
        first = self.first_failure_at.setdefault(task_id, datetime.now(UTC))
        if durable is not None:
            count = max(count, durable[0])
            first = min(first, durable[1])
        self.attempts[task_id] = count
        self.first_failure_at[task_id] = first
        return count

    def settled(self) -> None:
        self.tasks, self.letters, self.failures = [], [], []


def process_moderation_batch(
    services: Services, records: Sequence[ConsumedRecord], report: BatchReport | None = None
) -> BatchReport:
    """Bring every record of the batch to a durable outcome (see the module docstring).

    `report`, when given, is filled in as outcomes become durable, so that a caller
    still has what was written when the batch is abandoned (a stop or a revoke during a
    retry wait), which raises instead of returning it."""
    report = report if report is not None else BatchReport(records=len(records))
    work = _parse_records(services, records, report)
    policy = temporary_error_policy(services.settings, sleep=services.sleep)
    try:
        for attempt in policy:
            with attempt:
                if attempt.retry_state.attempt_number > 1:
                    report.retries += 1
                _attempt_batch(services, work, report)
    except TemporaryError as error:
        _fail_exhausted(services, work, error, report)
    return report


def _parse_records(
    services: Services, records: Sequence[ConsumedRecord], report: BatchReport
) -> _Work:
    canonical = parse_canonical_batch([record.value for record in records])
    if canonical is not None and len(set(canonical[0])) == len(records):
        # The usual batch, all produced by us and no task twice: no per-record parsing.
        return _Work(tasks=list(map(_Task, records, *canonical)), letters=[])
    work = _Work(tasks=[], letters=[])
    # By task and item: a corrupt copy naming another ad must not pass for the real record.
    seen: set[tuple[int, int]] = set()
    for record in records:
        try:
            message = _parse_one(record)
        except MalformedMessage as error:
            log.warning(
                "malformed record",
                extra={"partition": record.partition, "offset": record.offset, "error": str(error)},
            )
            work.letters.append(
                _letter(services, record, error, PERMANENT, 1, None, task_exists=False)
            )
            continue
        if message in seen:
            # The same task twice in one batch (say, republished by the relay): one is enough.
            report.duplicates += 1
            continue
        seen.add(message)
        work.tasks.append(_Task(record, message.task_id, message.item_id))
    return work


def _parse_one(record: ConsumedRecord) -> TaskMessage:
    try:
        return parse_task_message(record.value)
    except MalformedMessage:
        raise
    except Exception as error:
        # Whatever a record does to the parser, it is that record's problem: it is
        # dead-lettered alone instead of failing, and replaying, its whole batch.
        log.exception("unexpected error parsing a record")
        raise MalformedMessage(f"unparseable value: {type(error).__name__}: {error}") from error


def _attempt_batch(services: Services, work: _Work, report: BatchReport) -> None:
    """One all-or-nothing attempt; on success nothing is left to do."""
    try:
        stored = _score_and_write(services, work, report)
    except TemporaryError as error:
        _count_failed_attempt(services, work, error, report)
        if not work.done:
            raise
        return
    except ShutdownRequested:
        raise
    except Exception as error:
        # A bug must not stall the partition forever: it is retried like an outage,
        # and after the last attempt the task is failed and dead-lettered.
        log.exception("unexpected error while processing a batch")
        unexpected = TemporaryError(f"unexpected {type(error).__name__}: {error}")
        _count_failed_attempt(services, work, unexpected, report)
        if not work.done:
            raise unexpected from error
        return
    work.settled()
    publish_dead_letters(services, stored)
    report.dead_lettered += len(stored)


def _score_and_write(
    services: Services, work: _Work, report: BatchReport
) -> list[StoredDeadLetter]:
    with services.db.autocommit() as db:
        rows = db.load_tasks_with_ads([(task.task_id, task.item_id) for task in work.tasks])
        to_score: list[tuple[_Task, TaskForProcessing]] = []
        for task in work.tasks:
            row = rows.get(task.task_id)
            if (
                row is not None
                and row.status == "pending"
                and row.ad is not None
                and row.item_id == task.item_id
            ):
                to_score.append((task, row))  # the usual case, checked inline: it runs per record
            else:
                _sort_out(services, task, row, report, work)
        work.tasks = [task for task, _ in to_score]  # what was sorted out is settled now
        scored, invalid, model_failing = _score(services, to_score)
        if invalid:
            work.failures += [_failure_with_letter(services, *refusal) for refusal in invalid]
            refused = {task.task_id for task, _, _ in invalid}
            work.tasks = [task for task in work.tasks if task.task_id not in refused]
        if model_failing is not None:
            # The refusals, settled, are written with the failed attempt's own write.
            raise model_failing
        completed, failed, stored = _write_outcomes(db, scored, work.failures, work.letters)
    # Scored, but finished by another consumer before our UPDATE reached them.
    report.duplicates += (0 if scored is None else len(scored.task_ids)) - len(completed)
    report.completed += len(completed)
    report.failed += failed
    return stored


def _sort_out(
    services: Services,
    task: _Task,
    row: TaskForProcessing | None,
    report: BatchReport,
    work: _Work,
    *,
    attempt_counted: bool = False,
) -> None:
    """A task that cannot be scored as it is: a duplicate, a letter or a failure, settled
    for good (the caller takes it out of the tasks to score). `attempt_counted`: `row` was
    read after the last failed attempt was counted, not by an attempt of its own."""
    if row is not None and row.status != "pending" and row.item_id == task.item_id:
        # Redelivered after it finished: never move it back, never dead-letter again.
        report.duplicates += 1
        return
    problem = _permanent_problem(task, row)
    assert problem is not None, "a pending task with its ad is scored, not sorted out"
    if row is None or isinstance(problem, RecordDoesNotMatchTask):
        # No task, or the row is the truth and this record a corrupt copy (failing
        # the task would lose a valid request): only the record is dead-lettered.
        work.letters.append(_task_letter(services, task, None, problem))
    elif attempt_counted:
        # The failed attempt that brought us here is already on the row (or, with the
        # database down then, in memory): this read is no attempt of its own.
        attempts = max(row.attempts, work.attempts.get(task.task_id, 0))
        work.failures.append(_failure_with_letter(services, task, row, problem, attempts))
    else:
        work.failures.append(_failure_with_letter(services, task, row, problem))


def _write_outcomes(
    db: Transaction,
    scored: _Scored | None,
    failures: Sequence[tuple[TaskFailure, DeadLetter]],
    letters: Sequence[DeadLetter],
) -> tuple[set[int], int, list[StoredDeadLetter]]:
    """(completed ids, failed count, stored letters). The verdicts alone are one
    statement, atomic on its own; with failures or letters all writes are one transaction."""
    if not failures and not letters:
        return _complete(db, scored), 0, []
    with db.atomic() as tx:
        completed = _complete(tx, scored)
        failed, stored = _fail_and_dead_letter(tx, failures, letters)
    return completed, failed, stored


def _complete(db: Transaction, scored: _Scored | None) -> set[int]:
    return set() if scored is None else db.complete_tasks(scored.task_ids, scored.verdicts)


def _fail_and_dead_letter(
    tx: Transaction,
    failures: Sequence[tuple[TaskFailure, DeadLetter]],
    letters: Sequence[DeadLetter],
) -> tuple[int, list[StoredDeadLetter]]:
    """Fail the tasks still pending and store `letters` plus the letters of those failed.

    A task another consumer finished meanwhile is left alone and gets no letter.
    """
    failed = tx.fail_tasks([failure for failure, _ in failures])
    own = [letter for failure, letter in failures if failure.task_id in failed]
    return len(failed), tx.insert_dead_letters([*letters, *own])


class RecordDoesNotMatchTask(MalformedMessage):
    """The record names an existing task but another ad than the task's."""


def _permanent_problem(task: _Task, row: TaskForProcessing | None) -> PermanentError | None:
    if row is None:
        return TaskNotFound(task.task_id)
    if row.item_id != task.item_id:
        return RecordDoesNotMatchTask(
            f"item_id {task.item_id} does not match task {row.id}'s item_id {row.item_id}"
        )
    if row.ad is None:
        return AdNotFound(row.item_id)
    return None


Refusals = list[tuple[_Task, TaskForProcessing, PermanentError]]


def _score(
    services: Services, to_score: list[tuple[_Task, TaskForProcessing]]
) -> tuple[_Scored | None, Refusals, Exception | None]:
    """One vectorised call; if the model refuses or fails the batch, the ads one by one.

    (verdicts, ads refused for good, the model's own failure): the last is not None when
    no ad scored, and then every ad not refused is to be retried like an outage."""
    if not to_score:
        return None, [], None
    model = services.model.get()
    try:
        verdicts = _checked(model.predict_batch([row.ad for _, row in to_score]))
        return _Scored([row.id for _, row in to_score], verdicts), [], None
    except (TemporaryError, ShutdownRequested):
        raise
    except Exception as error:  # InvalidFeatures, or a bug the model has on some ad
        return _score_one_by_one(model, to_score, batch_error=error)


def _score_one_by_one(
    model: Model, to_score: list[tuple[_Task, TaskForProcessing]], *, batch_error: Exception
) -> tuple[_Scored | None, Refusals, Exception | None]:
    """What `_score` returns, from a model call per ad: after the batch's call failed."""
    task_ids: list[int] = []
    parts: list[BatchVerdicts] = []
    invalid: Refusals = []
    failed_on_ads = []
    for task, row in to_score:
        try:
            parts.append(_checked(model.predict_batch([row.ad])))
        except InvalidFeatures as error:
            invalid.append((task, row, error))
        except (TemporaryError, ShutdownRequested):
            raise
        except Exception as error:
            failed_on_ads.append((task, row, error))
        else:
            task_ids.append(row.id)
    if failed_on_ads and not parts:
        # Not one ad scored: the model itself is failing, not an input (a refusal says
        # nothing of that, being about an ad's fields). The refusals are settled; the rest
        # is retried on the schedule like an outage (`_attempt_batch`).
        return None, invalid, failed_on_ads[0][2]
    if not failed_on_ads and not invalid and not isinstance(batch_error, InvalidFeatures):
        # Each ad scored alone, so the batch goes on, but every batch would cost a model
        # call per ad for as long as this lasts: it must show.
        log.error("the model failed on a batch, and on none of its ads alone", exc_info=batch_error)
    for task, row, error in failed_on_ads:
        # The others of the batch scored, so this ad is what the model chokes on: it is
        # failed and dead-lettered at once, and its neighbours complete.
        log.error(
            "the model failed on one ad of its batch",
            exc_info=error,
            extra={"task_id": task.task_id, "item_id": task.item_id},
        )
        reason = ModelFailedOnAd(f"the model failed on this ad: {type(error).__name__}: {error}")
        invalid.append((task, row, reason))
    scored = _Scored(task_ids, BatchVerdicts.joined(parts, model.version)) if parts else None
    return scored, invalid, None


def _checked(verdicts: BatchVerdicts) -> BatchVerdicts:
    """The verdicts, or ValueError for a probability outside [0, 1] (NaN included): written,
    it would fail the CHECK on the column, and with it the UPDATE of the whole batch."""
    probability = verdicts.probability
    if not np.all((probability >= 0) & (probability <= 1)):  # NaN compares false
        raise ValueError("the model gave a probability outside [0, 1]")
    return verdicts


def _count_failed_attempt(
    services: Services, work: _Work, error: TemporaryError, report: BatchReport
) -> None:
    """Record the failed attempt on the rows and fail the tasks that reached the limit."""
    limit = services.settings.retry_max_attempts
    counted_before = dict(work.attempts)
    try:
        with _undone_with(work, report), services.db.transaction() as tx:
            # By task and item: a corrupt copy naming another ad, not yet told apart
            # when the read failed, must not count an attempt against the real task.
            durable = tx.record_failed_attempt(work.tasks_as_named(), str(error))
            for task_id in work.task_ids():
                work.count_failure(task_id, durable.get(task_id))
            exhausted = [t for t in work.tasks if work.attempts[t.task_id] >= limit]
            if exhausted:
                exhausted = _still_to_fail(services, tx, exhausted, work, report)
            failed, stored = _fail_and_dead_letter(
                tx,
                [*work.failures, *_exhausted_failures(services, exhausted, work, error)],
                work.letters,
            )
    except DatabaseUnavailable:
        # Counted in memory only this time; the durable count catches up later.
        work.attempts = counted_before
        for task_id in work.task_ids():
            work.count_failure(task_id, None)
        return
    report.failed += failed
    work.tasks = [t for t in work.tasks if work.attempts[t.task_id] < limit]
    work.letters, work.failures = [], []
    publish_dead_letters(services, stored)
    report.dead_lettered += len(stored)


def _fail_exhausted(
    services: Services, work: _Work, error: TemporaryError, report: BatchReport
) -> None:
    """The schedule ran out: fail what is left, waiting for the database if it is down too."""
    delay = max(services.settings.retry_delays() or [services.settings.retry_base_delay_s])
    while not work.done:
        try:
            with _undone_with(work, report), services.db.transaction() as tx:
                exhausted = _still_to_fail(services, tx, work.tasks, work, report)
                failed, stored = _fail_and_dead_letter(
                    tx,
                    [*work.failures, *_exhausted_failures(services, exhausted, work, error)],
                    work.letters,
                )
        except DatabaseUnavailable:
            log.warning("cannot record exhausted tasks yet: database unavailable")
            services.sleep(delay)
            continue
        work.settled()
        report.failed += failed
        publish_dead_letters(services, stored)
        report.dead_lettered += len(stored)


@contextmanager
def _undone_with(work: _Work, report: BatchReport) -> Iterator[None]:
    """What the block's reads sort out (letters, failures, duplicates) is undone if its
    transaction fails: the next try reads those tasks again and sorts them out anew."""
    letters, failures, duplicates = list(work.letters), list(work.failures), report.duplicates
    try:
        yield
    except DatabaseUnavailable:
        work.letters, work.failures, report.duplicates = letters, failures, duplicates
        raise


def _still_to_fail(
    services: Services, tx: Transaction, tasks: Sequence[_Task], work: _Work, report: BatchReport
) -> list[_Task]:
    """Of the tasks that ran out of attempts, those their records still describe (pending,
    same ad, ad there); the others are sorted out as a read would have, had one succeeded
    before: a copy must not fail the real task, nor a record of no task lose its letter."""
    rows = tx.load_tasks_with_ads([(task.task_id, task.item_id) for task in tasks])
    to_fail = []
    for task in tasks:
        row = rows.get(task.task_id)
        if row is not None and row.status == "pending" and _permanent_problem(task, row) is None:
            to_fail.append(task)
        else:
            _sort_out(services, task, row, report, work, attempt_counted=True)
    return to_fail


def _failure_with_letter(
    services: Services,
    task: _Task,
    row: TaskForProcessing,
    problem: PermanentError,
    attempts: int | None = None,
) -> tuple[TaskFailure, DeadLetter]:
    """`attempts` in all; by default this one, which read `row`, is counted on top of its."""
    attempts = row.attempts + 1 if attempts is None else attempts
    failure = TaskFailure(task_id=row.id, reason=str(problem), attempts=attempts)
    return failure, _task_letter(services, task, row, problem, attempts)


def _exhausted_failures(
    services: Services, tasks: Sequence[_Task], work: _Work, error: TemporaryError
) -> list[tuple[TaskFailure, DeadLetter]]:
    return [
        (_exhausted(task, work, error), _exhausted_letter(services, task, work, error))
        for task in tasks
    ]


def _exhausted(task: _Task, work: _Work, error: TemporaryError) -> TaskFailure:
    attempts = work.attempts.get(task.task_id, 0)
    return TaskFailure(
        task_id=task.task_id,
        reason=f"gave up after {attempts} attempts: {error}",
        attempts=attempts,
    )


def _task_letter(
    services: Services,
    task: _Task,
    row: TaskForProcessing | None,
    problem: PermanentError,
    attempts: int | None = None,
) -> DeadLetter:
    if attempts is None:
        attempts = 1 if row is None else row.attempts + 1
    return _letter(
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
    services: Services, task: _Task, work: _Work, error: TemporaryError
) -> DeadLetter:
    return _letter(
        services,
        task.record,
        error,
        EXHAUSTED,
        work.attempts.get(task.task_id, 0),
        task.task_id,
        task_exists=True,
        first_failure_at=work.first_failure_at.get(task.task_id),
    )


def _letter(
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
