"""Fixtures of every test tier.

Kafka and PostgreSQL start once per session, and only when a test asks for
`infra` (directly or through `database_url` / `settings`), so unit tests run
without Java. KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL, when set, name servers to
use instead of starting them (e.g. the ones of `eval "$(make -s infra-up)"`;
note that `database_url` empties their tables).
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from infra.kafka_broker import KafkaBroker
from infra.postgres_server import PostgresServer
from infra.run_dirs import claim_run_dir, clean_abandoned_run_dirs, remove_data_keep_logs
from shared.db.migrations import apply_migrations
from shared.kafka.topics import TopicSetupError, delete_topics, ensure_topics
from shared.logging_setup import RepeatsDropped
from shared.settings import KAFKA_SECURITY_SETTINGS, Settings
from shared.settings_environment import drop_settings_from

TESTS_DIR = Path(__file__).resolve().parent
# The servers to use are the only settings the tests take from the environment (with how
# to reach a Kafka named there): any other (API_KEYS, PORT, MODEL_URI, ...) set on the
# machine would change what every Settings() of the tests reads, so it is cleared before
# the first test. The broker the tests start takes plaintext.
SETTINGS_FROM_THE_ENVIRONMENT = {"database_url", "kafka_bootstrap_servers"}
if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
    SETTINGS_FROM_THE_ENVIRONMENT.update(KAFKA_SECURITY_SETTINGS)
drop_settings_from(os.environ, set(Settings.model_fields) - SETTINGS_FROM_THE_ENVIRONMENT)
TIER_MARKERS = {"integration": pytest.mark.integration, "e2e": pytest.mark.e2e}
TABLES = "ads, sellers, moderation_results, idempotency_keys, dead_letters"
KEPT_LOGS = pytest.StashKey[Path]()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # tryfirst: the markers must be on before `-m "not integration"` deselects by them.
    for item in items:
        try:
            tier = item.path.resolve().relative_to(TESTS_DIR).parts[0]
        except ValueError:
            continue
        if tier in TIER_MARKERS:
            item.add_marker(TIER_MARKERS[tier])


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    kept_logs = terminalreporter.config.stash.get(KEPT_LOGS, None)
    if kept_logs is not None:
        terminalreporter.write_line(f"Kafka and PostgreSQL logs of this session: {kept_logs}")


@dataclass(frozen=True)
class Infrastructure:
    kafka_bootstrap_servers: str
    database_url: str
    kafka: KafkaBroker | None  # None: an external broker named by KAFKA_BOOTSTRAP_SERVERS
    postgres: PostgresServer | None  # None: an external server named by DATABASE_URL


@pytest.fixture(autouse=True)
def _repeated_log_lines_forgotten() -> Iterator[None]:
    """Each test sees its first copy of a line: the filters that drop a line repeated within
    a minute (`drop_repeats`) live as long as the process, so a line another test logged
    just before, or a session fixture while starting a server, would otherwise be missing."""
    _forget_repeated_log_lines()
    yield
    _forget_repeated_log_lines()


def _forget_repeated_log_lines() -> None:
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for logger in loggers:
        for log_filter in getattr(logger, "filters", ()):  # a PlaceHolder has none
            if isinstance(log_filter, RepeatsDropped):
                log_filter.forget_all()


@pytest.fixture(scope="session")
def infra(request: pytest.FixtureRequest) -> Iterator[Infrastructure]:
    """A real Kafka broker and PostgreSQL server for the session, the schema migrated."""
    external_kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    external_database = os.environ.get("DATABASE_URL")
    run_dir = None
    if not (external_kafka and external_database):
        clean_abandoned_run_dirs()
        run_dir = claim_run_dir()
    kafka = None if external_kafka else KafkaBroker(run_dir / "kafka")
    postgres = None if external_database else PostgresServer(run_dir / "postgres")
    servers = [server for server in (kafka, postgres) if server is not None]
    try:
        # Both start before either is waited for: initdb runs while the broker's JVM boots.
        for server in servers:
            server.start(wait=False)
        for server in servers:
            server.wait_until_ready()
        database_url = postgres.url if postgres else external_database
        apply_migrations(database_url)
    except BaseException:
        _stop_and_tidy(servers, run_dir, request, failed=True)
        raise
    try:
        yield Infrastructure(
            kafka_bootstrap_servers=kafka.bootstrap_servers if kafka else external_kafka,
            database_url=database_url,
            kafka=kafka,
            postgres=postgres,
        )
    finally:
        _stop_and_tidy(servers, run_dir, request, failed=request.session.testsfailed > 0)


def _stop_and_tidy(
    servers: list[KafkaBroker | PostgresServer],
    run_dir: Path | None,
    request: pytest.FixtureRequest,
    *,
    failed: bool,
) -> None:
    for server in servers:
        # Each one whatever the others do: a broker whose stop raised (its port still
        # taken) must not leave the database running in its own session.
        try:
            server.stop()
        except Exception as error:
            warnings.warn(f"could not stop {type(server).__name__}: {error}", stacklevel=1)
    if run_dir is None:
        return
    if failed:
        remove_data_keep_logs(run_dir)
        request.config.stash[KEPT_LOGS] = run_dir
    else:
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture
def database_url(infra: Infrastructure) -> str:
    """The session's database with every table emptied, so each test starts from no rows."""
    try:
        # A bounded lock wait: a connection some earlier test left open inside a
        # transaction would otherwise block TRUNCATE for ever.
        with psycopg.connect(
            infra.database_url, autocommit=True, connect_timeout=5, options="-c lock_timeout=10s"
        ) as conn:
            conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
    except psycopg.errors.LockNotAvailable:
        pytest.fail(
            f"TRUNCATE {TABLES} waited 10 s for a lock: a connection of an earlier test "
            "is still open inside a transaction"
        )
    return infra.database_url


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection to the emptied database, for tests of our SQL itself."""
    with psycopg.connect(database_url, autocommit=True) as connection:
        yield connection


@pytest.fixture
def settings(infra: Infrastructure, database_url: str) -> Iterator[Settings]:
    """Settings for one test: its own topics and consumer group, short delays."""
    suffix = uuid.uuid4().hex[:8]
    test_settings = Settings(
        database_url=database_url,
        kafka_bootstrap_servers=infra.kafka_bootstrap_servers,
        kafka_moderation_topic=f"moderation-{suffix}",
        kafka_dlq_topic=f"moderation_dlq-{suffix}",
        kafka_consumer_group=f"moderation-consumer-{suffix}",
        retry_base_delay_s=0.01,
        outbox_grace_s=0.5,
        consumer_poll_timeout_s=0.2,
    )
    ensure_topics(test_settings)
    try:
        yield test_settings
    finally:
        try:
            delete_topics(test_settings, timeout_s=5.0)
        except TopicSetupError as exc:
            # The topics have unique names, so a leftover harms no other test.
            warnings.warn(f"topics of this test were not deleted: {exc}", stacklevel=1)
