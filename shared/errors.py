"""The service's exceptions. Their type decides whether a failure is retried: a
TemporaryError is, a PermanentError never is.

An exception of any other type is a bug, which the consumer turns into one of these where
it catches it: a bug on one record or one ad fails that one alone (MalformedMessage,
ModelFailedOnAd), and one on the whole batch is retried like an outage (UnexpectedFailure);
see shared/moderation/batch.py and scoring.py. An HTTP function answers it with a 500."""

from __future__ import annotations

from typing import ClassVar


class ModerationError(Exception):
    """Base of every error the service raises on purpose."""

    # What a client may be told of it, for the classes whose message can hold more than a
    # client should see (a path, a host, an exception's text from deep inside); None: the
    # message itself. The log and the DLQ record keep the message.
    public_reason: ClassVar[str | None] = None


class PermanentError(ModerationError):
    """Retrying cannot help: the input is wrong or the thing it names does not exist."""


class TemporaryError(ModerationError):
    """A dependency is down or slow; the same work may succeed later."""

    public_reason = "a dependency is unavailable"


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
        # With the API open, every caller shares the keys: the message names neither the
        # task nor the ad, which may be another caller's.
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

    public_reason = "the model failed on this ad"


class ModelUnavailable(TemporaryError):
    """The model artifact is missing, unreachable or failed to load."""

    public_reason = "the model is unavailable"


class DatabaseUnavailable(TemporaryError):
    """PostgreSQL refused the connection, dropped it or timed out."""

    public_reason = "the database is unavailable"


class BrokerUnavailable(TemporaryError):
    """Kafka did not acknowledge a publish in time."""

    public_reason = "Kafka is unavailable"


class PartlyAcknowledged(BrokerUnavailable):
    """Kafka acknowledged some records of a publish and not the others (rejected, or not
    in time): `acknowledged[i]` tells for the i-th, so an outbox marks just those."""

    def __init__(self, message: str, acknowledged: list[bool]) -> None:
        super().__init__(message)
        self.acknowledged = acknowledged


class UnexpectedFailure(TemporaryError):
    """A bug met while processing a batch: retried like an outage, so that it does not
    stall its partition forever, then failed and dead-lettered."""

    public_reason = "an unexpected error"


def public_reason(error: ModerationError) -> str:
    """`error` as a client may read it: in a 503's detail, or as a failed task's `error`."""
    return error.public_reason or str(error)


def is_temporary(error: BaseException) -> bool:
    return isinstance(error, TemporaryError)
