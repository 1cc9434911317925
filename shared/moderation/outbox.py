"""Publishing an outbox's rows: which of them Kafka took, so that only those are marked."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from shared.errors import PartlyAcknowledged, TemporaryError
from shared.kafka.record import OutgoingRecord
from shared.ports import Publisher

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


@dataclass(frozen=True, slots=True)
class SweepOutcome(Generic[Key]):
    published: list[Key]
    refused: TemporaryError | None  # set when Kafka took none of the sweep's rows

    def published_or_raise(self) -> int:
        """How many rows were published; raises the refusal, if Kafka took none."""
        if self.refused is not None:
            raise self.refused
        return len(self.published)


def settle_sweep(
    publisher: Publisher,
    records: Sequence[OutgoingRecord],
    keys: Sequence[Key],
    *,
    mark_published: Callable[[list[Key]], None],
    count_tries: Callable[[list[Key]], None],
) -> SweepOutcome[Key]:
    """Publish a relay sweep's claimed rows (locked by the caller's transaction): mark
    those Kafka took, and count one more failed try on the rest, so that the next claims
    put them behind rows tried less. A refusal of every row is returned, not raised,
    for the caller to raise once its transaction committed: rolled back, the count
    would be too, and a sweep of rows Kafka refuses for good would claim them each time."""
    try:
        published = publish_for_outbox(publisher, records, keys)
        refused = None
    except TemporaryError as error:
        published, refused = [], error
    mark_published(published)
    taken = set(published)
    count_tries([key for key in keys if key not in taken])
    return SweepOutcome(published, refused)
