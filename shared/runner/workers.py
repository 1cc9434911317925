"""The runner's background threads: the Kafka poll loop and the outbox relay."""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Callable
from typing import Any

import flask
import functions_framework
from confluent_kafka import Consumer, TopicPartition

from shared.bootstrap import Services
from shared.errors import TemporaryError
from shared.kafka.config import consumer_config
from shared.kafka.poll_loop import BatchHandler, PartitionedPollLoop
from shared.moderation.relay import failed_step, relay_until_caught_up
from shared.runner.targets import CONSUMER_FUNCTION
from shared.settings import Settings

log = logging.getLogger(__name__)


def load_consumer_handler() -> BatchHandler:
    """`process_records` of functions/moderation_consumer/main.py, the deployed handler itself."""
    source = CONSUMER_FUNCTION.source
    # A name of its own: functions-framework registers every function module as `main`.
    spec = importlib.util.spec_from_file_location("moderation_consumer_main", source)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load the consumer function from {source}")
    module = importlib.util.module_from_spec(spec)
    # The module registers its JSON error handlers on the app functions-framework is
    # building (`functions_framework.errorhandler`). None is being built here, and that
    # name still points at the last app built: an HTTP function's, which refuses them
    # once it has served a request. A throwaway app takes them instead.
    building = functions_framework.errorhandler
    functions_framework.errorhandler = flask.Flask(spec.name).errorhandler
    try:
        spec.loader.exec_module(module)
    finally:
        functions_framework.errorhandler = building
    return module.process_records


class _AssignmentAwareConsumer(Consumer):
    """A Consumer that also sets `assigned` when the group hands it partitions.

    The flag is set inside the on_assign callback, on the poll thread: asking the
    consumer from another thread (`assignment()`) holds the GIL while librdkafka
    waits, and can deadlock against the poll thread's own callbacks.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.assigned = threading.Event()

    def subscribe(self, topics: list[str], **callbacks: Callable[..., None]) -> None:
        on_assign = callbacks.get("on_assign")

        def record_assignment(consumer: Consumer, partitions: list[TopicPartition]) -> None:
            if on_assign is not None:
                on_assign(consumer, partitions)
            if partitions:
                self.assigned.set()

        super().subscribe(topics, **{**callbacks, "on_assign": record_assignment})


class _ThreadWorker:
    """A worker running on one daemon thread; `stop()` sets its event and joins it."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout_s: float) -> bool:
        """Ask the thread to finish; False if it is still running after `timeout_s`."""
        self._stop.set()
        if self._thread is None:
            return True
        self._thread.join(timeout_s)
        return not self._thread.is_alive()


class ConsumerWorker(_ThreadWorker):
    """The partitioned poll loop on its own thread, handing batches to `handle_batch`.

    On `stop()` the loop finishes its in-flight batches, commits and closes before it ends.
    """

    def __init__(self, settings: Settings, handle_batch: BatchHandler) -> None:
        super().__init__()
        self._settings = settings
        self._handle_batch = handle_batch
        self._consumer: _AssignmentAwareConsumer | None = None
        self._loop: PartitionedPollLoop | None = None

    def is_alive(self) -> bool:
        # Dead as soon as the loop gives up, not once it has closed its client: a client
        # that cannot reach its coordinator may take a minute to close, or never.
        return super().is_alive() and (self._loop is None or self._loop.stuck is None)

    def start(self) -> None:
        self._consumer = _AssignmentAwareConsumer(consumer_config(self._settings))
        loop = self._loop = PartitionedPollLoop(
            self._consumer,
            self._settings.kafka_moderation_topic,
            self._handle_batch,
            batch_size=self._settings.consumer_batch_size,
            poll_timeout_s=self._settings.consumer_poll_timeout_s,
            max_workers=self._settings.db_pool_max_size,
        )
        self._thread = threading.Thread(
            target=_run_logging_its_end, args=(loop, self._stop), name="poll-loop", daemon=True
        )
        self._thread.start()

    def wait_for_assignment(self, timeout_s: float) -> bool:
        """True once the group gave this consumer partitions (a first join takes a moment)."""
        if self._consumer is None:
            return False
        return self._consumer.assigned.wait(timeout_s)


# After a failed sweep the relay waits twice as long as before, up to this (or its
# interval, if longer): an outage of Kafka or PostgreSQL, or a record the broker always
# refuses, then costs a warning every 10 s instead of every second, and the sweep that
# finds the outage over comes at most 10 s after its end.
RELAY_BACKOFF_MAX_S = 10.0


# How long one turn of the relay process goes on sweeping while each pass finds a full
# batch (a backlog after an outage), before its interval's wait: at one batch of
# OUTBOX_BATCH_SIZE a turn, a backlog of 60,000 rows took two minutes to go out, in
# passes of ~20 ms.
CATCH_UP_BUDGET_S = 10.0


def relay_catching_up(services: Services) -> int:
    """`relay_once`, and again at once while a pass finds more than it may take, for up to
    CATCH_UP_BUDGET_S (or until the process is stopping)."""
    return relay_until_caught_up(services, budget_s=CATCH_UP_BUDGET_S)


class RelayWorker(_ThreadWorker):
    """Runs `relay_catching_up` every `outbox_relay_interval_s` until stopped, less often
    while sweeps fail."""

    def __init__(
        self,
        services: Services,
        sweep: Callable[[Services], int] = relay_catching_up,
        *,
        backoff_max_s: float = RELAY_BACKOFF_MAX_S,
    ) -> None:
        super().__init__()
        self._services = services
        self._sweep = sweep
        self._backoff_max_s = backoff_max_s

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="outbox-relay", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        interval = self._services.settings.outbox_relay_interval_s
        longest = max(interval, self._backoff_max_s)
        wait = interval
        while not self._stop.wait(wait):
            swept = self._sweep_reporting_failure()
            wait = interval if swept is not None else min(wait * 2, longest)

    def sweep_once(self) -> int:
        """One sweep; a failure is logged and the next sweep tries again."""
        return self._sweep_reporting_failure() or 0

    def _sweep_reporting_failure(self) -> int | None:
        """What one sweep published, or None when it failed (logged)."""
        try:
            published = self._sweep(self._services)
        except TemporaryError as error:
            log.warning(
                "outbox relay sweep failed; retrying",
                extra={"error": str(error), "step": failed_step(error)},
            )
            return None
        except Exception as error:
            # A bug must not end the relay thread silently: log it, keep sweeping.
            log.exception(
                "outbox relay sweep crashed; retrying", extra={"step": failed_step(error)}
            )
            return None
        if published:
            log.info("outbox relay published", extra={"records": published})
        return published


def _run_logging_its_end(loop: PartitionedPollLoop, stop: threading.Event) -> None:
    """The loop's end, logged like everything else: the process then stops, because
    `is_alive` turned false."""
    try:
        loop.run(stop)
    except Exception:
        log.exception("the poll loop failed")
