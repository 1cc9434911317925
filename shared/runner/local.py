"""`python local_runner.py`: the whole service in one process, for development.

Start-up: embedded servers for what is not configured, migrations, topics, demo
data, the model; then the HTTP server, the poll loop and the relay. Shutdown, on
Ctrl-C or SIGTERM, within SHUTDOWN_BUDGET_S: abort retry waits, stop accepting
requests (those in flight get HTTP_DRAIN_S), let the in-flight batch finish and
commit its offsets, stop the relay, flush the producer, close the pool, stop the
embedded servers.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass

import psycopg

from shared import metrics
from shared.bootstrap import Services, build_services, install_services
from shared.db.migrations import apply_migrations
from shared.db.pool import one_shot_connection
from shared.db.tasks import republish_pending_tasks
from shared.errors import ModerationError
from shared.logging_setup import configure_logging
from shared.runner.app import build_runner_app
from shared.runner.cli import RunnerOptions, parse_options
from shared.runner.demo_data import seed_demo_data
from shared.runner.embedded import Backends, start_backends
from shared.runner.http_server import HttpServer, listen, request_cap_for
from shared.runner.shutdown import (
    SHUTDOWN_BUDGET_S,
    Deadline,
    StartUpInterrupted,
    StartUpInterruption,
    StopSignal,
    finish_and_exit_status,
)
from shared.runner.workers import ConsumerWorker, RelayWorker, load_consumer_handler
from shared.settings import Settings

log = logging.getLogger(__name__)

# Of the shutdown budget, what requests in flight may take; the poll loop's batches need the rest.
HTTP_DRAIN_S = 1.0
# librdkafka's mock cluster holds a new group's first assignment back for 3 s.
ASSIGNMENT_TIMEOUT_S = 15.0
# What start-up can fail with, each with a message that says what to do.
START_UP_ERRORS = (RuntimeError, OSError, ModerationError, psycopg.Error)


@dataclass
class _Running:
    services: Services
    server: HttpServer
    consumer: ConsumerWorker
    relay: RelayWorker


def run(argv: Sequence[str]) -> int:
    """Start everything, serve until Ctrl-C or SIGTERM, stop; the process's exit status."""
    options = parse_options(argv)
    configure_logging(options.settings.log_level)
    stop = StopSignal()
    # Until the service itself starts, a stop signal cuts start-up short (it may wait a
    # minute on a broker that does not answer), and the ExitStack stops what had started.
    interruption = StartUpInterruption()
    interruption.install()
    with ExitStack() as stack:
        try:
            # The port first: taken, it fails in a second, before PostgreSQL and Kafka
            # are started for nothing (and their shutdown's lines bury the reason).
            listener = stack.enter_context(listen(options.host, options.settings.port))
            backends = start_backends(
                options.settings,
                os.environ,
                stack,
                options.state_dir,
                uninterrupted=interruption.deferred,
            )
            prepare_data(backends, options)
            services = load_services(backends.settings)
            # From here a stop signal is a request the running service answers in order.
            stop.install()
            running = start(services, options, stop, listener)
        except StartUpInterrupted as interrupted:
            # A second signal must not cut short the ExitStack stopping what had started.
            stop.install()
            log.info("stopped during start-up", extra={"signal": str(interrupted)})
            print(f"local_runner: stopped during start-up ({interrupted})", file=sys.stderr)
            return 0
        except START_UP_ERRORS as error:
            # As above: a signal now must not cut short stopping the embedded PostgreSQL.
            stop.install()
            log.error("start-up failed", extra={"error": str(error)})
            print(f"local_runner: start-up failed: {error}", file=sys.stderr)
            return 1
        if not stop.requested.is_set():  # a stop during the wait for partitions
            print_banner(backends, options, running)
        signalled = stop.wait(healthy=lambda: running.consumer.is_alive())
        if not signalled:
            log.error("the poll loop stopped on its own; shutting down")
        log.info("stopping", extra={"signal": stop.signal_name})
        deadline = Deadline(SHUTDOWN_BUDGET_S)
        late = not shut_down(running, deadline)
        stack.close()
        log.info("stopped", extra={"seconds": round(deadline.elapsed(), 3)})
    return finish_and_exit_status(signalled=signalled, late=late)


# What a runner on its own embedded database must not share with other deployments on the
# same broker.
_SHARED_KAFKA_NAMES = ("kafka_moderation_topic", "kafka_dlq_topic", "kafka_consumer_group")


def _refuse_shared_kafka_names(settings: Settings) -> None:
    """Refuse the default topics and group on a real broker with the embedded database:
    the runner's consumer would split `moderation` with every other deployment there and
    take records whose tasks live in another database (dead-lettering them, and leaving
    its own tasks to the others), and its dead letters would go to their DLQ."""
    shared = [
        name.upper()
        for name in _SHARED_KAFKA_NAMES
        if getattr(settings, name) == Settings.model_fields[name].default
    ]
    if shared:
        raise RuntimeError(
            "KAFKA_BOOTSTRAP_SERVERS names a broker other deployments may use, but the "
            "database is the runner's own embedded one: with the default "
            f"{', '.join(shared)} its consumer would take their records, whose tasks live in "
            "another database. Set DATABASE_URL too (`make infra-up` starts both), or give "
            "this runner names of its own: KAFKA_MODERATION_TOPIC, KAFKA_DLQ_TOPIC and "
            "KAFKA_CONSUMER_GROUP"
        )


def prepare_data(backends: Backends, options: RunnerOptions) -> None:
    """Schema and topics always; demo data when asked, or by default on the embedded database."""
    settings = backends.settings
    if backends.in_memory_kafka and not backends.embedded_database:
        # The relay would publish that database's unpublished tasks and dead letters into
        # a broker that loses them at exit, and the republish below would send every
        # pending task of other processes again.
        raise RuntimeError(
            "DATABASE_URL names a database other processes may use, but no "
            "KAFKA_BOOTSTRAP_SERVERS is set: the in-memory Kafka would take that database's "
            "unpublished tasks and dead letters and lose them at exit. Set "
            "KAFKA_BOOTSTRAP_SERVERS too, or leave DATABASE_URL unset for the embedded database"
        )
    if backends.embedded_database and not backends.in_memory_kafka:
        _refuse_shared_kafka_names(settings)
    apply_migrations(settings.database_url)
    if not backends.in_memory_kafka:
        # The mock cluster has no CreateTopics; start_backends created its topics.
        from shared.kafka.topics import ensure_topics

        ensure_topics(settings)
    if backends.embedded_database:
        # The runner's own database: its pending tasks may have gone to a broker that is
        # gone (the last run's in-memory Kafka, even when this run has a real broker) or
        # to topics this run does not read; published again, a task still on a live topic
        # is only a duplicate, which the consumer recognises.
        _republish_tasks_lost_with_the_last_broker(settings)
    if seeds_demo_data(backends, options):
        added = seed_demo_data(
            settings.database_url, connect_timeout_s=settings.db_connect_timeout_s
        )
        log.info("demo data seeded", extra={"ads_added": added})


def seeds_demo_data(backends: Backends, options: RunnerOptions) -> bool:
    """Demo data when asked, or by default on the embedded database."""
    return backends.embedded_database if options.seed_demo is None else options.seed_demo


def _republish_tasks_lost_with_the_last_broker(settings: Settings) -> None:
    """The in-memory Kafka of a last run took its records with it, while the tasks it
    had acknowledged are still pending in the (kept) database: the relay publishes them
    again, instead of their waiting for good."""
    with one_shot_connection(settings.database_url, settings.db_connect_timeout_s) as conn:
        count = republish_pending_tasks(conn)
    if count:
        log.info("pending tasks of an earlier run handed to the relay", extra={"tasks": count})


def load_services(settings: Settings) -> Services:
    """The services, with the model loaded and the broker reached now, so that the first
    request does not pay for it and a missing model or an unreachable broker fails here,
    with its reason (and a stop signal meanwhile cuts it short)."""
    services = build_services(settings)
    install_services(services)
    metrics.record_model_version(services.model.get().version)
    services.publisher.ping()
    return services


def start(
    services: Services, options: RunnerOptions, stop: StopSignal, listener: socket.socket
) -> _Running:
    settings = services.settings
    server = HttpServer(
        build_runner_app(),
        options.host,
        settings.port,
        listener=listener,
        # Room for the largest body the functions take, chunked framing included.
        max_request_bytes=request_cap_for(settings.max_body_bytes),
    )
    consumer = ConsumerWorker(settings, load_consumer_handler())
    relay = RelayWorker(services)
    server.start()
    consumer.start()
    relay.start()
    if not _wait_for_assignment(consumer, stop) and not stop.requested.is_set():
        log.warning(
            "the consumer has no partitions yet; tasks stay pending until it joins its group",
            extra={"waited_s": ASSIGNMENT_TIMEOUT_S},
        )
    return _Running(services, server, consumer, relay)


def _wait_for_assignment(consumer: ConsumerWorker, stop: StopSignal) -> bool:
    """Up to ASSIGNMENT_TIMEOUT_S, and no longer once a stop signal came."""
    deadline = Deadline(ASSIGNMENT_TIMEOUT_S)
    while not stop.requested.is_set() and deadline.remaining(floor_s=0) > 0:
        if consumer.wait_for_assignment(min(0.1, deadline.remaining())):
            return True
    return False


def shut_down(running: _Running, deadline: Deadline) -> bool:
    """Each step bounded by what is left of the budget; a late step is logged, not waited
    for. False if the poll loop or the relay was still running at the end."""
    services = running.services
    # Retry waits end now (ShutdownRequested): such a batch is redelivered after a restart.
    services.stopping.set()
    # Requests being answered get a moment to finish while their services are still open.
    if not running.server.stop(timeout_s=min(deadline.remaining(), HTTP_DRAIN_S)):
        log.warning("HTTP requests were still running at shutdown")
    consumer_stopped = running.consumer.stop(timeout_s=deadline.remaining())
    if not consumer_stopped:
        log.warning("the poll loop did not stop in time")
    relay_stopped = running.relay.stop(timeout_s=deadline.remaining())
    if not relay_stopped:
        log.warning("the outbox relay did not stop in time")
    services.close(deadline.remaining)
    # The closed services stay installed: a request still running after the drain that
    # needs the database gets a 503 from them, where with none installed
    # it would have built new ones from the environment, pointing at other servers than
    # this runner's.
    return consumer_stopped and relay_stopped


def print_banner(backends: Backends, options: RunnerOptions, running: _Running) -> None:
    base = f"http://{_url_host(options.host)}:{running.server.port}"
    # The demo's first ad; a database of its own may hold no ad 1.
    item = "1" if seeds_demo_data(backends, options) else "{item_id}"
    lines = [
        f"Ad moderation is running on {base} (Ctrl-C stops it)",
        *(f"  {line}" for line in backends.describe()),
        f"  model:    {running.services.model.get().version}",
        "",
        f"  POST {base}/predict                 (the ad as a JSON body)",
        f"  POST {base}/simple_predict?item_id={item}",
        f"  POST {base}/async_predict?item_id={item}",
        f"  GET  {base}/moderation_result/{{task_id}}",
        f"  docs {base}/docs   openapi {base}/openapi.json",
        f"  ops  {base}/healthz   {base}/readyz   {base}/metrics",
    ]
    print("\n".join(lines), flush=True)


def _url_host(host: str) -> str:
    """The host as a URL names it: an IPv6 address in brackets, a wildcard as localhost."""
    if host in ("127.0.0.1", "0.0.0.0", "::"):
        return "localhost"
    return f"[{host}]" if ":" in host else host
