"""The service's exceptions. Whether a failure is retried is decided here, by type."""

from __future__ import annotations


class ModerationError(Exception):
    """Base of every error the service raises on purpose."""


class PermanentError(ModerationError):
    """Retrying cannot help: the input is wrong or the thing it names does not exist."""


class TemporaryError(ModerationError):
    """A dependency is down or slow; the same work may succeed later."""


class AdNotFound(PermanentError):
    def __init__(self, item_id: int) -> None:
        super().__init__("Ad not found")
        self.item_id = item_id


class TaskNotFound(PermanentError):
    def __init__(self, task_id: int) -> None:
        super().__init__("Task not found")
        self.task_id = task_id


class IdempotencyKeyReused(PermanentError):
    """An Idempotency-Key already names a task for another ad than this request's."""

    def __init__(self, task_id: int, item_id: int) -> None:
        # Keys are global: the message names neither the task nor the ad, which may be
        # another caller's.
        super().__init__("This Idempotency-Key was used for another ad; use a new key")
        self.task_id = task_id
        self.item_id = item_id


class MalformedMessage(PermanentError):
    """A Kafka record that is not a valid moderation envelope."""


class InvalidFeatures(PermanentError):
    """Ad fields the model cannot score (wrong type, out of range)."""


class ModelFailedOnAd(PermanentError):
    """The model raised an unexpected error on this ad alone, while it scored the others of
    its batch: a poison input, which retrying would only repeat."""


class ModelUnavailable(TemporaryError):
    """The model artifact is missing, unreachable or failed to load."""


class DatabaseUnavailable(TemporaryError):
    """PostgreSQL refused the connection, dropped it or timed out."""


class BrokerUnavailable(TemporaryError):
    """Kafka did not acknowledge a publish in time."""


class PartlyAcknowledged(BrokerUnavailable):
    """Kafka acknowledged some records of a publish and not the others (rejected, or not
    in time): `acknowledged[i]` tells for the i-th, so an outbox marks just those."""

    def __init__(self, message: str, acknowledged: list[bool]) -> None:
        super().__init__(message)
        self.acknowledged = acknowledged


def is_temporary(error: BaseException) -> bool:
    return isinstance(error, TemporaryError)
