"""Accepting moderation tasks and reading their results."""

from __future__ import annotations

import logging
from typing import NamedTuple

from shared.bootstrap import Services
from shared.db.idempotency_keys import KeyedTask
from shared.db.tasks import TaskRow
from shared.errors import (
    AdNotFound,
    BrokerUnavailable,
    DatabaseUnavailable,
    IdempotencyKeyReused,
    TaskNotFound,
)
from shared.kafka.envelope import encode_task_message
from shared.kafka.record import OutgoingRecord

log = logging.getLogger(__name__)


class Submitted(NamedTuple):
    task_id: int
    replayed: bool  # an earlier request with the same Idempotency-Key made the task


def submit_moderation_task(
    services: Services,
    item_id: int,
    idempotency_key: str | None = None,
    *,
    caller: str | None = None,
) -> Submitted:
    """Create a pending task for an existing ad and publish it.

    The task row is committed before the publish and doubles as its outbox entry:
    if Kafka is down or this process dies right after the commit, the row stays
    unpublished and the relay publishes it later. So an accepted task (a 202) is
    never lost; while Kafka is down a caller just sees it `pending` for longer.

    With an `idempotency_key` that an earlier request used for the same ad within the
    key's lifetime (IDEMPOTENCY_KEY_TTL_S), that request's task is returned and nothing
    is made or published (the relay publishes it if the first request could not); for
    another ad, IdempotencyKeyReused. An expired key makes a new task, as a new key would.
    A key is the `caller`'s own (see shared/http/auth.py, `caller_scope`): the same key
    from another caller is another key.
    """
    if idempotency_key is not None and caller is not None:
        # A comma, which no key a client sends may hold: a key stored while the API was
        # open can never be the same string as a caller's.
        idempotency_key = f"{caller},{idempotency_key}"
    with services.db.autocommit() as session:
        if idempotency_key is None:
            task_id = session.create_task_for_existing_ad(item_id)
            keyed = None if task_id is None else KeyedTask(task_id, item_id, created=True)
        else:
            keyed = session.create_keyed_task(
                item_id, idempotency_key, key_ttl_s=services.settings.idempotency_key_ttl_s
            )
    if keyed is None:
        raise AdNotFound(item_id)
    if keyed.item_id != item_id:
        raise IdempotencyKeyReused(keyed.task_id, keyed.item_id)
    if keyed.created:
        _publish_task(services, keyed.task_id, item_id)
    return Submitted(keyed.task_id, replayed=not keyed.created)


def _publish_task(services: Services, task_id: int, item_id: int) -> None:
    key, value = encode_task_message(task_id, item_id)
    topic = services.settings.kafka_moderation_topic
    try:
        services.publisher.publish([OutgoingRecord(topic, key, value)])
        with services.db.autocommit() as session:
            session.mark_tasks_published([task_id])
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


def get_moderation_result(services: Services, task_id: int) -> TaskRow:
    with services.db.autocommit() as session:
        task = session.get_task(task_id)
    if task is None:
        raise TaskNotFound(task_id)
    return task


# Expired keys deleted per call: ten of the relay's default sweeps' worth, so that one
# relay sweeping every second keeps up with 5,000 keyed requests a second (a relay called
# by a scheduler sweeps again while a purge finds this many).
EXPIRED_KEYS_PER_PURGE = 5000


def purge_expired_idempotency_keys(services: Services) -> int:
    """Delete idempotency keys past their lifetime, the soonest expired first; returns
    how many. Each key carries its own expiry, so this process's IDEMPOTENCY_KEY_TTL_S
    plays no part. Their tasks stay: only the key's hold on them ends."""
    with services.db.autocommit() as session:
        return session.delete_expired_idempotency_keys(limit=EXPIRED_KEYS_PER_PURGE)
