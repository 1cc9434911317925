"""The outbox relay: publishes what an immediate publish left behind.

Safe to run in any number of processes at once (rows are claimed with SKIP
LOCKED), and a task published twice is harmless: the consumer is idempotent.
"""

from __future__ import annotations

import logging

from shared import metrics
from shared.bootstrap import Services
from shared.errors import TemporaryError, is_temporary
from shared.kafka.envelope import encode_task_message
from shared.kafka.record import OutgoingRecord
from shared.moderation.dead_letters import dead_letter_records
from shared.moderation.outbox import publish_for_outbox

log = logging.getLogger(__name__)


def relay_unpublished_tasks(services: Services) -> int:
    """Publish pending tasks older than the grace period that Kafka never acknowledged,
    the least tried first; raises, once the tries are counted, if Kafka took none."""
    settings = services.settings
    refused: TemporaryError | None = None
    with services.db.transaction() as tx:
        claimed = tx.claim_unpublished_tasks(
            older_than_s=settings.outbox_grace_s, limit=settings.outbox_batch_size
        )
        if not claimed:
            return 0
        task_ids = [task_id for task_id, _ in claimed]
        records = []
        for task_id, item_id in claimed:
            key, value = encode_task_message(task_id, item_id)
            records.append(OutgoingRecord(settings.kafka_moderation_topic, key, value))
        # Published while the rows are locked: what Kafka did not take stays claimable.
        try:
            published = publish_for_outbox(services.publisher, records, task_ids)
        except TemporaryError as error:
            # Committed all the same, so that the next sweep claims other tasks first.
            published, refused = [], error
        tx.mark_tasks_published(published)
        taken = set(published)
        tx.count_task_publish_tries([task_id for task_id in task_ids if task_id not in taken])
    if refused is not None:
        raise refused
    return len(published)


def relay_unpublished_dead_letters(services: Services) -> int:
    """Publish unpublished DLQ letters, the least tried first; raises, once the tries
    are counted, if Kafka took none of them."""
    settings = services.settings
    refused: TemporaryError | None = None
    with services.db.transaction() as tx:
        claimed = tx.claim_unpublished_dead_letters(
            older_than_s=settings.outbox_grace_s, limit=settings.outbox_batch_size
        )
        if not claimed:
            return 0
        ids = [item.id for item in claimed]
        try:
            published = publish_for_outbox(
                services.publisher, dead_letter_records(settings.kafka_dlq_topic, claimed), ids
            )
        except TemporaryError as error:
            # Committed all the same: a sweep of letters Kafka refuses for good would
            # otherwise roll back its count and claim those same letters every time.
            published, refused = [], error
        tx.mark_dead_letters_published(published)
        taken = set(published)
        tx.count_dead_letter_publish_tries(
            [letter_id for letter_id in ids if letter_id not in taken]
        )
    if refused is not None:
        raise refused
    return len(published)


def relay_once(services: Services) -> int:
    """Both sweeps, the second even if the first failed (the `moderation` topic refusing
    its tasks says nothing of `moderation_dlq`), unless the process is stopping; then
    the failure, if any: a bug before an outage, so that it is reported as one."""
    published = 0
    failures: list[Exception] = []
    for kind, sweep in (
        ("task", relay_unpublished_tasks),
        ("dead_letter", relay_unpublished_dead_letters),
    ):
        if failures and services.stopping.is_set():
            break
        try:
            swept = sweep(services)
        except Exception as error:
            metrics.observe_outbox_sweep(kind, None)
            failures.append(error)
        else:
            metrics.observe_outbox_sweep(kind, swept)
            published += swept
    if not failures:
        return published
    failures.sort(key=is_temporary)  # False first: a bug outranks an outage
    for other in failures[1:]:
        log.warning(
            "the other outbox sweep failed too",
            extra={"error": f"{type(other).__name__}: {other}"},
            exc_info=None if is_temporary(other) else other,
        )
    raise failures[0]
