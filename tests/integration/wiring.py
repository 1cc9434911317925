"""Real adapters wired for a test, and the consumer's poll loop running on them."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from confluent_kafka import Consumer

from shared.bootstrap import Services, build_services, install_services
from shared.kafka.config import consumer_config
from shared.kafka.poll_loop import PartitionedPollLoop
from shared.kafka.record import ConsumedRecord
from shared.moderation.batch import process_moderation_batch
from shared.settings import Settings


@contextmanager
def wired_services(settings: Settings, **replacements: object) -> Iterator[Services]:
    """Real adapters for `settings`, installed for the handlers, closed afterwards."""
    services = build_services(settings)
    for name, value in replacements.items():
        setattr(services, name, value)
    install_services(services)
    try:
        yield services
    finally:
        install_services(None)
        services.close()


def new_poll_loop(
    services: Services,
    handle_batch: Callable[[list[ConsumedRecord]], object] | None = None,
    **loop_options: object,
) -> PartitionedPollLoop:
    """The consumer's poll loop on the services' settings, on a new client; by default
    handing batches to the moderation handler."""
    settings = services.settings
    return PartitionedPollLoop(
        Consumer(consumer_config(settings)),
        settings.kafka_moderation_topic,
        handle_batch or (lambda records: process_moderation_batch(services, records)),
        batch_size=settings.consumer_batch_size,
        poll_timeout_s=settings.consumer_poll_timeout_s,
        max_workers=settings.db_pool_max_size,
        **loop_options,  # type: ignore[arg-type]
    )


@contextmanager
def running_consumer(
    services: Services,
    handle_batch: Callable[[list[ConsumedRecord]], object] | None = None,
    **loop_options: object,
) -> Iterator[PartitionedPollLoop]:
    """The poll loop in a background thread, stopped (bounded) when the block ends; a loop
    that died of an error fails the test with that error, even one whose checks a dead
    loop would pass (it is not stuck, it holds no partition)."""
    loop = new_poll_loop(services, handle_batch, **loop_options)
    stop = threading.Event()
    died_of: list[BaseException] = []

    def run() -> None:
        try:
            loop.run(stop)
        except BaseException as error:
            died_of.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield loop
    except BaseException as error:
        # The test's own failure stays the one reported, naming the loop's death if any.
        if died_of:
            error.add_note(f"the poll loop had died of {died_of[0]!r}")
        raise
    finally:
        stop.set()
        thread.join(timeout=30)
        if thread.is_alive():
            pytest.fail("poll loop did not stop within 30 s")
    if died_of:
        raise died_of[0]
