"""Wiring: builds the real pool, producer and model loader once per process.

Handlers call `get_services()`, which builds everything on first use (never at
import time). Tests and the local runner build their own `Services`, with fakes
or test instances, and hand it over with `install_services()`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from shared.cancellation import wait_unless_stopped
from shared.db import Database
from shared.kafka.config import producer_config
from shared.kafka.publisher import KafkaPublisher
from shared.logging_setup import configure_logging_unless_done
from shared.ports import ModelSource, Publisher
from shared.settings import InvalidSettings, Settings, get_settings


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
        wait_unless_stopped(self.stopping, seconds)

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
