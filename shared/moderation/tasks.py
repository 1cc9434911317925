"""Accepting moderation tasks and reading their results."""

from __future__ import annotations

import logging

from shared.bootstrap import Services
from shared.db.tasks import TaskRow
from shared.errors import AdNotFound, BrokerUnavailable, DatabaseUnavailable, TaskNotFound
from shared.kafka.envelope import encode_task_message
from shared.kafka.record import OutgoingRecord

log = logging.getLogger(__name__)


def submit_moderation_task(services: Services, item_id: int) -> int:
    """Create a pending task for an existing ad and publish it; returns the task id.

    The task row is committed before the publish and doubles as its outbox entry:
    if Kafka is down or this process dies right after the commit, the row stays
    unpublished and the relay publishes it later. So an accepted task (a 202) is
    never lost; while Kafka is down a caller just sees it `pending` for longer.
    """
    with services.db.autocommit() as tx:
        task_id = tx.create_task_for_existing_ad(item_id)
    if task_id is None:
        raise AdNotFound(item_id)
    key, value = encode_task_message(task_id, item_id)
    topic = services.settings.kafka_moderation_topic
    try:
        services.publisher.publish([OutgoingRecord(topic, key, value)])
        with services.db.autocommit() as tx:
            tx.mark_tasks_published([task_id])
    except (BrokerUnavailable, DatabaseUnavailable) as error:
        # Accepted all the same: the relay republishes rows left unpublished.
        log.warning(
            "task accepted, publish deferred to the outbox relay",
            extra={"task_id": task_id, "item_id": item_id, "error": str(error)},
        )
    except Exception:
        # A bug or a broken producer config, after the commit: the task exists and the
        # relay will publish it, so the caller gets its id rather than a 500 whose
        # retry would make a second task.
        log.exception(
            "task accepted, but its publish failed unexpectedly; left to the outbox relay",
            extra={"task_id": task_id, "item_id": item_id},
        )
    return task_id


def get_moderation_result(services: Services, task_id: int) -> TaskRow:
    with services.db.autocommit() as tx:
        task = tx.get_task(task_id)
    if task is None:
        raise TaskNotFound(task_id)
    return task
