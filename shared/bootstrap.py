"""Wiring: builds the real pool, producer and model loader once per process.

Handlers call `get_services()`, which builds everything on first use (never at
import time). Tests and the local runner build their own `Services`, with fakes
or test instances, and hand it over with `install_services()`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Protocol

from shared.db import Database
from shared.domain import Ad, BatchVerdicts, Verdict
from shared.kafka.config import producer_config
from shared.kafka.publisher import KafkaPublisher
from shared.kafka.record import OutgoingRecord
from shared.logging_setup import configure_logging_unless_done
from shared.settings import InvalidSettings, Settings, get_settings


class ShutdownRequested(Exception):
    """Raised out of a retry wait when the process is stopping; the batch is redelivered."""


class BatchLetGo(ShutdownRequested):
    """Raised out of a retry wait when the batch's partition was revoked or lost: its next
    owner redelivers the batch, and a rebalance need not wait out the retry schedule."""


# Set by the poll loop on a worker thread for the length of one batch: the event its
# partition's revoke sets. None outside a batch of the poll loop (an HTTP push, say).
batch_let_go: ContextVar[threading.Event | None] = ContextVar("batch_let_go", default=None)

# How soon a retry wait notices that its batch was let go: one thread cannot wait on two
# events at once, so such a wait runs in slices.
LET_GO_CHECK_S = 0.1


class Model(Protocol):
    version: str
    threshold: float

    def predict(self, ads: list[Ad]) -> list[Verdict]: ...

    def predict_batch(self, ads: list[Ad]) -> BatchVerdicts: ...


class ModelSource(Protocol):
    def get(self) -> Model: ...

    def loaded(self) -> Model | None: ...


class Publisher(Protocol):
    def publish(self, records: list[OutgoingRecord]) -> None: ...

    def ping(self, timeout_s: float = 2.0) -> None: ...

    def close(self, timeout_s: float = 5.0) -> None: ...


@dataclass
class Services:
    settings: Settings
    db: Database
    model: ModelSource
    publisher: Publisher
    stopping: threading.Event = field(default_factory=threading.Event)
    # Tests pass a recorder here to check the retry schedule without waiting it out.
    sleeper: Callable[[float], None] | None = None

    def sleep(self, seconds: float) -> None:
        """Wait, unless the process is stopping or the running batch is let go: then
        abandon the wait (ShutdownRequested, BatchLetGo)."""
        if self.sleeper is not None:
            self.sleeper(seconds)
            return
        let_go = batch_let_go.get()
        if let_go is None:
            if self.stopping.wait(seconds):
                raise ShutdownRequested()
            return
        deadline = time.monotonic() + seconds
        while True:
            if let_go.is_set():
                raise BatchLetGo()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if self.stopping.wait(min(remaining, LET_GO_CHECK_S)):
                raise ShutdownRequested()

    def close(self, remaining_s: Callable[[], float] = lambda: 5.0) -> None:
        """End retry waits, flush the producer, close the pool: the last steps of every
        shutdown. Each of the two closes may take what `remaining_s()` says is left of
        the shutdown's budget."""
        self.stopping.set()
        self.publisher.close(timeout_s=remaining_s())
        self.db.close(timeout_s=remaining_s())


def build_services(settings: Settings | None = None) -> Services:
    """The real adapters for `settings` (the environment's by default)."""
    from shared.model import ModelLoader
    from shared.model.loading import RETRY_FAILED_LOAD_S

    settings = settings or get_settings()
    return Services(
        settings=settings,
        db=Database(
            settings.database_url,
            min_size=settings.db_pool_min_size,
            max_size=settings.db_pool_max_size,
            connect_timeout_s=settings.db_connect_timeout_s,
            statement_timeout_ms=settings.db_statement_timeout_ms,
            prepared_statements=settings.db_prepared_statements,
        ),
        model=ModelLoader(
            settings.model_uri,
            retry_failed_load_s=min(RETRY_FAILED_LOAD_S, settings.retry_base_delay_s),
        ),
        publisher=KafkaPublisher(
            producer_config(settings),
            timeout_s=settings.kafka_publish_timeout_s,
            queue_full_wait_s=settings.queue_full_wait_s,
            topics=(settings.kafka_moderation_topic, settings.kafka_dlq_topic),
        ),
    )


_services: Services | None = None
_lock = threading.Lock()


def get_services() -> Services:
    global _services
    services = _services
    if services is not None:
        # Built already: every request calls this, and its threads need not queue on the lock.
        return services
    with _lock:
        if _services is None:
            try:
                settings = get_settings()
            except InvalidSettings:
                # Their reason is still logged in JSON lines, at the default level:
                # LOG_LEVEL may be the setting at fault.
                configure_logging_unless_done(Settings.model_fields["log_level"].default)
                raise
            # A deployed function has no entry point of ours to set logging up; without
            # this, LOG_LEVEL did nothing there and warnings lost their extra fields.
            configure_logging_unless_done(settings.log_level)
            _services = build_services(settings)
        return _services


def install_services(services: Services | None) -> None:
    """Use `services` for every handler in this process (None: build from env on next use)."""
    global _services
    with _lock:
        _services = services
