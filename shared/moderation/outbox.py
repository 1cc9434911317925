"""Publishing an outbox's rows: which of them Kafka took, so that only those are marked."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TypeVar

from shared.bootstrap import Publisher
from shared.errors import PartlyAcknowledged
from shared.kafka.record import OutgoingRecord

log = logging.getLogger(__name__)

Key = TypeVar("Key")


def publish_for_outbox(
    publisher: Publisher, records: Sequence[OutgoingRecord], keys: Sequence[Key]
) -> list[Key]:
    """Publish outbox rows' records; the keys of those Kafka acknowledged. Raises only if
    it took none, so that one record the broker keeps refusing (too large for a topic
    made before its limit was raised, say) holds back no other row of the sweep, and
    none is sent again on its account."""
    try:
        publisher.publish(records)
    except PartlyAcknowledged as error:
        taken = [key for key, done in zip(keys, error.acknowledged, strict=True) if done]
        if not taken:
            raise
        log.warning(
            "Kafka took part of a publish; the rest stays in the outbox",
            extra={"taken": len(taken), "left": len(keys) - len(taken), "error": str(error)},
        )
        return taken
    return list(keys)
