"""The outbox relay: publishes what an immediate publish left behind, and deletes
expired idempotency keys (the one periodic job the service has, so it runs here).

Safe to run in any number of processes at once (rows are claimed with SKIP
LOCKED), and a task published twice is harmless: the consumer is idempotent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from typing import NamedTuple

from shared import metrics
from shared.bootstrap import Services
from shared.errors import DatabaseUnavailable, is_temporary
from shared.kafka.envelope import encode_task_message
from shared.kafka.record import OutgoingRecord
from shared.moderation.dead_letters import dead_letter_records
from shared.moderation.outbox import settle_sweep
from shared.moderation.tasks import EXPIRED_KEYS_PER_PURGE, purge_expired_idempotency_keys

log = logging.getLogger(__name__)


class _Swept(NamedTuple):
    """What a sweep (or a pass of both sweeps and the purge) did."""

    published: int
    full: bool  # it took all it may take at once, and got it all out: more may be waiting


def relay_unpublished_tasks(services: Services) -> int:
    """Publish pending tasks older than the grace period that Kafka never acknowledged,
    the least tried first; raises, once the tries are counted, if Kafka took none."""
    return _sweep_tasks(services).published


def relay_unpublished_dead_letters(services: Services) -> int:
    """Publish unpublished DLQ letters, the least tried first; raises, once the tries
    are counted, if Kafka took none of them."""
    return _sweep_dead_letters(services).published


def _sweep_tasks(services: Services) -> _Swept:
    settings = services.settings
    with services.db.transaction() as tx:
        claimed = tx.claim_unpublished_tasks(
            older_than_s=settings.outbox_grace_s, limit=settings.outbox_batch_size
        )
        if not claimed:
            return _Swept(0, full=False)
        records = [
            OutgoingRecord(settings.kafka_moderation_topic, *encode_task_message(*task))
            for task in claimed
        ]
        outcome = settle_sweep(
            services.publisher,
            records,
            [task_id for task_id, _ in claimed],
            mark_published=tx.mark_tasks_published,
            count_tries=tx.count_task_publish_tries,
        )
    published = outcome.published_or_raise()
    return _Swept(published, full=published >= settings.outbox_batch_size)


def _sweep_dead_letters(services: Services) -> _Swept:
    settings = services.settings
    with services.db.transaction() as tx:
        claim = tx.claim_unpublished_dead_letters(
            older_than_s=settings.outbox_grace_s, limit=settings.outbox_batch_size
        )
        if not claim.letters:
            return _Swept(0, full=False)
        outcome = settle_sweep(
            services.publisher,
            dead_letter_records(settings.kafka_dlq_topic, claim.letters),
            [letter.id for letter in claim.letters],
            mark_published=tx.mark_dead_letters_published,
            count_tries=tx.count_dead_letter_publish_tries,
        )
    published = outcome.published_or_raise()
    # Cut short by its bytes, a claim is full below the batch size.
    return _Swept(published, full=claim.full and published == len(claim.letters))


def relay_once(services: Services) -> int:
    """Both sweeps, the second even if the first failed (the `moderation` topic refusing
    its tasks says nothing of `moderation_dlq`), then the purge of expired keys, unless
    the process is stopping or the database is down; returns how many rows were
    published, or raises the failure, if any: a bug before an outage, so that it is
    reported as one."""
    return _relay_pass(services).published


def relay_until_caught_up(services: Services, *, budget_s: float) -> int:
    """`relay_once` again and again while a pass found more than it may take at once (a
    backlog after an outage), until `budget_s` has passed; returns how many rows were
    published, or raises as `relay_once` does (what earlier passes published stays so).

    For a relay that runs only when a scheduler calls it, as seldom as once a minute: one
    pass a call would drain a backlog at a batch a minute. The budget is checked between
    passes, so the last one may end a publish wait (~3.5 s) after it. A step that fails
    (Kafka taking only part of its records, say) is not run again until the next call,
    but the others go on while they find full batches: one letter the DLQ refuses for
    good must not hold a backlog of tasks to a batch a call. The worst failure is raised
    at the end."""
    deadline = time.monotonic() + budget_s
    published = 0
    failures: list[Exception] = []
    failed_kinds: set[str] = set()
    while True:
        done, failed = _relay_pass_outcome(services, skip=failed_kinds)
        published += done.published
        failures += failed.values()
        failed_kinds |= failed.keys()
        if not done.full or services.stopping.is_set() or time.monotonic() >= deadline:
            break
    if failures:
        _raise_first(failures)
    return published


def _relay_pass(services: Services) -> _Swept:
    """What `relay_once` does, and whether a step found more than one pass takes."""
    done, failed = _relay_pass_outcome(services)
    if failed:
        _raise_first(list(failed.values()))
    return done


def _relay_pass_outcome(
    services: Services, skip: Collection[str] = ()
) -> tuple[_Swept, dict[str, Exception]]:
    """A pass, and what failed in it by step ("task", "dead_letter", "purge"); the steps
    named in `skip` are left out."""
    published = 0
    full = False
    failures: list[Exception] = []
    failed: dict[str, Exception] = {}
    for kind, sweep in (("task", _sweep_tasks), ("dead_letter", _sweep_dead_letters)):
        if kind in skip:
            continue
        if _rest_is_futile(services, failures):
            # Counted as failed all the same: a sweep that could not run published nothing.
            metrics.observe_outbox_sweep(kind, None)
            continue
        try:
            swept = sweep(services)
        except Exception as error:
            metrics.observe_outbox_sweep(kind, None)
            error.add_note(f"in the relay's {kind} sweep")
            failures.append(error)
            failed[kind] = error
        else:
            metrics.observe_outbox_sweep(kind, swept.published)
            published += swept.published
            full |= swept.full
    # While Kafka is down the backlog and the purge still matter.
    if _rest_is_futile(services, failures):
        if _database_down(failures) and not published:
            metrics.age_uncounted_outbox_backlog()
    else:
        _measure_backlog(services, published_now=published)
        if "purge" not in skip:
            try:
                expired = purge_expired_idempotency_keys(services)
            except Exception as error:
                error.add_note("in the relay's purge of expired idempotency keys")
                failures.append(error)
                failed["purge"] = error
            else:
                metrics.count_expired_idempotency_keys(expired)
                full |= expired >= EXPIRED_KEYS_PER_PURGE
    return _Swept(published, full), failed


def _raise_first(failures: list[Exception]) -> None:
    """Raise the worst of `failures` (a bug before an outage), logging the others."""
    failures = sorted(failures, key=is_temporary)  # False first: a bug outranks an outage
    for other in failures[1:]:
        # At ERROR with its traceback when it is a bug, as every bug is logged.
        log.log(
            logging.WARNING if is_temporary(other) else logging.ERROR,
            "another relay step failed too",
            extra={"error": f"{type(other).__name__}: {other}", "step": failed_step(other)},
            exc_info=None if is_temporary(other) else other,
        )
    raise failures[0]


def _rest_is_futile(services: Services, failures: list[Exception]) -> bool:
    """Whether, after a step failed, the pass's other steps are better skipped: stopping,
    a publish could outlast the shutdown's budget; with the database down, each step
    would only wait out another connection timeout."""
    return bool(failures) and (services.stopping.is_set() or _database_down(failures))


def _database_down(failures: list[Exception]) -> bool:
    return any(isinstance(failure, DatabaseUnavailable) for failure in failures)


# The backlog gauge counts this far: past it an alert has long fired, and a count of a
# large backlog, once a pass, would cost the database more than the number is worth.
BACKLOG_COUNT_CAP = 10_000


def _measure_backlog(services: Services, *, published_now: int) -> None:
    """What the pass left for the next one, for the `moderation_outbox_backlog` and
    `moderation_outbox_oldest_age_seconds` gauges: a sweep can succeed and still leave
    rows (more than a sweep takes, or ones Kafka refused). A gauge is not worth failing
    the pass for, so a failure only skips it; with the database down, and nothing
    published by this pass (`published_now`), the rows counted last still wait, and
    their age goes on growing."""
    grace_s = services.settings.outbox_grace_s
    try:
        with services.db.autocommit() as session:
            tasks = session.measure_unpublished_tasks(older_than_s=grace_s, cap=BACKLOG_COUNT_CAP)
            letters = session.measure_unpublished_dead_letters(
                older_than_s=grace_s, cap=BACKLOG_COUNT_CAP
            )
    except Exception as error:
        log.debug("could not count the outbox backlog", extra={"error": str(error)})
        if isinstance(error, DatabaseUnavailable) and not published_now:
            metrics.age_uncounted_outbox_backlog()
        return
    metrics.set_outbox_backlog("task", tasks.rows, tasks.oldest_age_s)
    metrics.set_outbox_backlog("dead_letter", letters.rows, letters.oldest_age_s)


def failed_step(error: BaseException) -> str | None:
    """Which of a relay pass's steps `error` came from, as its note says."""
    return next((note for note in getattr(error, "__notes__", ()) if "relay's" in note), None)
