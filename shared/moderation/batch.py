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
batch is retried on the shared schedule (5/10/20 s by default). The count lives on the rows, so a
new owner goes on from it, but gives a task up only once its first failure is as old as
the whole schedule (`BatchWork.out_of_retries`). When the schedule runs out, the
transaction that fails the tasks reads them first, so what no read got to sort out (the
database was down all along) is sorted out then, not failed. The wait blocks only the
caller's thread, which the poll loop runs per partition.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple

from tenacity import RetryCallState

from shared import metrics
from shared.bootstrap import Services
from shared.cancellation import ShutdownRequested
from shared.db.dead_letters import DeadLetter, StoredDeadLetter
from shared.db.session import Session
from shared.db.tasks import TaskFailure, TaskForProcessing
from shared.errors import (
    AdNotFound,
    DatabaseUnavailable,
    MalformedMessage,
    PermanentError,
    TaskNotFound,
    TemporaryError,
    UnexpectedFailure,
    public_reason,
)
from shared.kafka.envelope import TaskMessage, parse_canonical_batch, parse_task_message
from shared.kafka.record import ConsumedRecord
from shared.moderation.batch_work import (
    BatchWork,
    TaskRecord,
    exhausted_failures,
    failure_with_letter,
    record_letter,
    task_letter,
)
from shared.moderation.dead_letters import PERMANENT, log_dead_letter, publish_dead_letters
from shared.moderation.scoring import Scored, score_ads
from shared.retry import database_outage_policy, temporary_error_policy

log = logging.getLogger(__name__)


@dataclass
class BatchReport:
    records: int = 0
    completed: int = 0
    failed: int = 0
    duplicates: int = 0
    # Records dead-lettered alone, failing no task: malformed, naming no task, or naming
    # another ad than their task's. With completed, failed and duplicates it adds up to
    # the records brought to an outcome.
    rejected: int = 0
    dead_lettered: int = 0  # letters stored: one per failed task, one per rejected record
    retries: int = 0


def process_moderation_batch(
    services: Services, records: Sequence[ConsumedRecord], report: BatchReport | None = None
) -> BatchReport:
    """Bring every record of the batch to a durable outcome (see the module docstring).

    `report`, when given, is filled in as outcomes become durable, so that a caller
    still has what was written when the batch is abandoned (a stop or a revoke during a
    retry wait), which raises instead of returning it."""
    report = report if report is not None else BatchReport(records=len(records))
    work = _parse_records(services, records, report)
    work.records = records
    policy = temporary_error_policy(
        services.settings, sleep=services.sleep, log_context=work.log_context
    )
    try:
        for attempt in policy:
            with attempt:
                if attempt.retry_state.attempt_number > 1:
                    report.retries += 1
                    # Counted now, not with the batch's outcome: during an outage the
                    # batch ends only once the outage does.
                    metrics.count_batch_retry()
                _attempt_batch(services, work, report)
    except TemporaryError as error:
        _fail_exhausted(services, work, error, report)
    return report


def _parse_records(
    services: Services, records: Sequence[ConsumedRecord], report: BatchReport
) -> BatchWork:
    canonical = parse_canonical_batch([record.value for record in records])
    if canonical is not None and len(set(canonical[0])) == len(records):
        # The usual batch, all produced by us and no task twice: no per-record parsing.
        return BatchWork(tasks=list(map(TaskRecord, records, *canonical)), letters=[])
    work = BatchWork(tasks=[], letters=[])
    # By task and item: a corrupt copy naming another ad must not pass for the real record.
    seen: set[tuple[int, int]] = set()
    for record in records:
        try:
            message = _parse_one(record)
        except MalformedMessage as error:
            # DEBUG: its letter is logged as a WARNING once durable, with the same reason.
            log.debug(
                "malformed record",
                extra={"partition": record.partition, "offset": record.offset, "error": str(error)},
            )
            work.letters.append(
                record_letter(services, record, error, PERMANENT, 1, None, task_exists=False)
            )
            continue
        if message in seen:
            # The same task twice in one batch (say, republished by the relay): one is enough.
            report.duplicates += 1
            continue
        seen.add(message)
        work.tasks.append(TaskRecord(record, message.task_id, message.item_id))
    return work


def _parse_one(record: ConsumedRecord) -> TaskMessage:
    try:
        return parse_task_message(record.value)
    except MalformedMessage:
        raise
    except Exception as error:
        # Whatever a record does to the parser, it is that record's problem: it is
        # dead-lettered alone instead of failing, and replaying, its whole batch.
        log.exception(
            "unexpected error parsing a record",
            extra={"partition": record.partition, "offset": record.offset},
        )
        raise MalformedMessage(f"unparseable value: {type(error).__name__}: {error}") from error


def _attempt_batch(services: Services, work: BatchWork, report: BatchReport) -> None:
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
        log.exception("unexpected error while processing a batch", extra=work.log_context())
        unexpected = UnexpectedFailure(f"unexpected {type(error).__name__}: {error}")
        _count_failed_attempt(services, work, unexpected, report)
        if not work.done:
            raise unexpected from error
        return
    work.forget_written()
    _publish_durable_letters(services, stored, report)


def _score_and_write(
    services: Services, work: BatchWork, report: BatchReport
) -> list[StoredDeadLetter]:
    with services.db.autocommit() as session:
        rows = session.load_tasks_with_ads([(task.task_id, task.item_id) for task in work.tasks])
        to_score: list[tuple[TaskRecord, TaskForProcessing]] = []
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
        scored, invalid, model_failing = score_ads(services.model, to_score)
        if invalid:
            work.failures += [
                failure_with_letter(
                    services, task, row, problem, work.attempts_before(task.task_id, row) + 1
                )
                for task, row, problem in invalid
            ]
            refused = {task.task_id for task, _, _ in invalid}
            work.tasks = [task for task in work.tasks if task.task_id not in refused]
        if model_failing is not None:
            # The refusals, settled, are written with the failed attempt's own write.
            raise model_failing
        completed, written = _write_outcomes(session, scored, work.failures, work.letters)
    # Scored, but finished by another consumer before our UPDATE reached them.
    report.duplicates += (0 if scored is None else len(scored.task_ids)) - len(completed)
    report.completed += len(completed)
    written.count_in(report)
    return written.stored


def _sort_out(
    services: Services,
    task: TaskRecord,
    row: TaskForProcessing | None,
    report: BatchReport,
    work: BatchWork,
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
        work.letters.append(task_letter(services, task, None, problem))
    else:
        # This read is an attempt of its own, counted on top of the earlier ones, unless
        # the failed attempt that brought us here already is (on the row, or in memory).
        attempts = work.attempts_before(task.task_id, row) + (0 if attempt_counted else 1)
        work.failures.append(failure_with_letter(services, task, row, problem, attempts))


def _write_outcomes(
    session: Session,
    scored: Scored | None,
    failures: Sequence[tuple[TaskFailure, DeadLetter]],
    letters: Sequence[DeadLetter],
) -> tuple[set[int], FailuresWritten]:
    """The ids completed, and what the failures and letters wrote. The verdicts alone are
    one statement, atomic on its own; with failures or letters all writes are one
    transaction."""
    if not failures and not letters:
        return _complete(session, scored), FailuresWritten(0, [], 0)
    with session.atomic() as tx:
        completed = _complete(tx, scored)
        written = _fail_and_dead_letter(tx, failures, letters)
    return completed, written


def _complete(session: Session, scored: Scored | None) -> set[int]:
    return set() if scored is None else session.complete_tasks(scored.task_ids, scored.verdicts)


class FailuresWritten(NamedTuple):
    failed: int  # tasks moved to failed
    stored: list[StoredDeadLetter]  # letters new to the outbox
    # Records of a task finished already: a letter stored before (a record consumed
    # again, after a crash or a rebalance), or a failure another consumer beat.
    repeated: int

    def count_in(self, report: BatchReport) -> None:
        """Once the transaction that wrote them has committed."""
        report.failed += self.failed
        report.duplicates += self.repeated


def _fail_and_dead_letter(
    tx: Session,
    failures: Sequence[tuple[TaskFailure, DeadLetter]],
    letters: Sequence[DeadLetter],
) -> FailuresWritten:
    """Fail the tasks still pending and store `letters` plus the letters of those failed.

    A task another consumer finished meanwhile is left alone and gets no letter.
    """
    failed = tx.fail_tasks([failure for failure, _ in failures])
    own = [letter for failure, letter in failures if failure.task_id in failed]
    stored = tx.insert_dead_letters([*letters, *own])
    # A task finished first by another consumer: its record is a duplicate, as the
    # record of a task completed meanwhile is.
    finished_elsewhere = len(failures) - len(own)
    return FailuresWritten(
        len(failed), stored, len(letters) + len(own) - len(stored) + finished_elsewhere
    )


class RecordDoesNotMatchTask(MalformedMessage):
    """The record names an existing task but another ad than the task's."""


def _permanent_problem(task: TaskRecord, row: TaskForProcessing | None) -> PermanentError | None:
    if row is None:
        return TaskNotFound(task.task_id)
    if row.item_id != task.item_id:
        return RecordDoesNotMatchTask(
            f"item_id {task.item_id} does not match task {row.id}'s item_id {row.item_id}"
        )
    if row.ad is None:
        return AdNotFound(row.item_id)
    return None


def _count_failed_attempt(
    services: Services, work: BatchWork, error: TemporaryError, report: BatchReport
) -> None:
    """Record the failed attempt on the rows and fail the tasks out of retries."""
    limit = services.settings.retry_max_attempts
    schedule_s = sum(services.settings.retry_delays())
    # Decided once per task: those given up on (failed, or sorted out by the read that
    # fails them) leave the batch, and no one else may.
    given_up: set[int] = set()
    counted_before, failing_before = dict(work.attempts), dict(work.row_failing_for_s)
    try:
        with _restored_if_the_database_fails(work, report), services.db.transaction() as tx:
            # By task and item: a corrupt copy naming another ad, not yet told apart
            # when the read failed, must not count an attempt against the real task.
            durable = tx.record_failed_attempt(work.tasks_as_named(), public_reason(error))
            for task_id in work.task_ids():
                work.count_failure(task_id, durable.get(task_id))
            given_up = {
                task_id
                for task_id in work.task_ids()
                if work.out_of_retries(task_id, limit, schedule_s)
            }
            exhausted = [t for t in work.tasks if t.task_id in given_up]
            if exhausted:
                exhausted = _still_to_fail(services, tx, exhausted, work, report)
            written = _fail_and_dead_letter(
                tx,
                [*work.failures, *exhausted_failures(services, exhausted, work, error)],
                work.letters,
            )
    except DatabaseUnavailable:
        # Counted in memory only this time; the durable count catches up later.
        work.attempts, work.row_failing_for_s = counted_before, failing_before
        for task_id in work.task_ids():
            work.count_failure(task_id, None)
        return
    written.count_in(report)
    work.tasks = [t for t in work.tasks if t.task_id not in given_up]
    work.letters, work.failures = [], []
    _publish_durable_letters(services, written.stored, report)


def _fail_exhausted(
    services: Services, work: BatchWork, error: TemporaryError, report: BatchReport
) -> None:
    """The schedule ran out: fail what is left, waiting for the database if it is down too."""
    if work.done:
        return
    delay = max(services.settings.retry_delays() or [services.settings.retry_base_delay_s])

    def before_wait(_state: RetryCallState) -> None:
        log.warning(
            "cannot record exhausted tasks yet: database unavailable", extra=work.log_context()
        )

    def before_retry(_state: RetryCallState) -> None:
        # Another attempt, counted as the schedule's are: an alert on the retries must
        # not clear while the outage goes on.
        report.retries += 1
        metrics.count_batch_retry()

    policy = database_outage_policy(
        delay_s=delay, sleep=services.sleep, before_wait=before_wait, before_retry=before_retry
    )
    for attempt in policy:
        with (
            attempt,
            _restored_if_the_database_fails(work, report),
            services.db.transaction() as tx,
        ):
            exhausted = _still_to_fail(services, tx, work.tasks, work, report)
            written = _fail_and_dead_letter(
                tx,
                [*work.failures, *exhausted_failures(services, exhausted, work, error)],
                work.letters,
            )
    work.forget_written()
    written.count_in(report)
    _publish_durable_letters(services, written.stored, report)


def _publish_durable_letters(
    services: Services, stored: Sequence[StoredDeadLetter], report: BatchReport
) -> None:
    """Letters just made durable with their tasks' failures: logged, published, counted."""
    for item in stored:
        log_dead_letter(item)
    publish_dead_letters(services, stored)
    report.dead_lettered += len(stored)
    # A letter names its task only when the task exists, so a failed task's letter does.
    report.rejected += sum(1 for item in stored if item.letter.task_id is None)


@contextmanager
def _restored_if_the_database_fails(work: BatchWork, report: BatchReport) -> Iterator[None]:
    """What the block's reads sort out (letters, failures, duplicates) is undone if its
    transaction fails: the next try reads those tasks again and sorts them out anew."""
    letters, failures, duplicates = list(work.letters), list(work.failures), report.duplicates
    try:
        yield
    except DatabaseUnavailable:
        work.letters, work.failures, report.duplicates = letters, failures, duplicates
        raise


def _still_to_fail(
    services: Services,
    tx: Session,
    tasks: Sequence[TaskRecord],
    work: BatchWork,
    report: BatchReport,
) -> list[TaskRecord]:
    """Of the tasks that ran out of attempts, those their records still describe (pending,
    same ad, ad there); the others are sorted out as a read would have, had one succeeded
    before: a copy must not fail the real task, nor a record of no task lose its letter."""
    rows = tx.load_tasks_with_ads([(task.task_id, task.item_id) for task in tasks])
    to_fail = []
    for task in tasks:
        row = rows.get(task.task_id)
        if row is not None and row.status == "pending" and _permanent_problem(task, row) is None:
            # The row may count more attempts, from earlier, than this batch counted in
            # memory while the database was down: the failure, its reason and its letter
            # all say the row's count, as the row will.
            work.count_earlier_failures(task.task_id, row.attempts, row.first_failure_at)
            to_fail.append(task)
        else:
            _sort_out(services, task, row, report, work, attempt_counted=True)
    return to_fail
