"""Kafka and PostgreSQL for the end-to-end benches, settings on them, and fresh topics.

Kafka and PostgreSQL start once per bench run, on first use, and stop when the
process exits; KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL, when both are set, name
servers to use instead (each run then works in a database of its own, dropped at
the end). Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import psycopg

from bench.report import log
from bench.seeding import connect
from bench.termination import exit_cleanly_on_sigterm
from infra import run_dirs
from infra.kafka_broker import KafkaBroker
from infra.postgres_server import PostgresServer
from shared.db.migrations import apply_migrations
from shared.kafka.topics import TopicSetupError, delete_topics, ensure_topics
from shared.settings import KAFKA_SECURITY_SETTINGS, Settings
from shared.settings_environment import drop_settings_from

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH_INFRA_ROOT = REPO_ROOT / "var" / "bench-infra"
OWNER_FILE = "owner.pid"
# In the command line of `python -m bench`, however it was started.
OWNER_MARKER = "bench"
MODEL_URI = str(REPO_ROOT / "var" / "models" / "default")


@dataclass(frozen=True)
class Stack:
    kafka_bootstrap_servers: str
    database_url: str
    run_dir: Path


class _SharedStack:
    """The one stack of this process: started on first `get()`, stopped at exit."""

    def __init__(self) -> None:
        self._stack: Stack | None = None
        self._servers: list[KafkaBroker | PostgresServer] = []
        self._drop_database: tuple[str, str] | None = None

    def get(self) -> Stack:
        if self._stack is None:
            atexit.register(self.stop)
            exit_cleanly_on_sigterm()
            self._stack = self._start()
        return self._stack

    def _start(self) -> Stack:
        _clean_abandoned_run_dirs()
        run_dir = BENCH_INFRA_ROOT / uuid.uuid4().hex[:12]
        run_dir.mkdir(parents=True)
        (run_dir / OWNER_FILE).write_text(f"{os.getpid()}\n")
        external_kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        external_database = os.environ.get("DATABASE_URL")
        if external_kafka and external_database:
            database_url = _create_database(external_database, f"bench_{uuid.uuid4().hex[:8]}")
            self._drop_database = (external_database, database_url)
            apply_migrations(database_url)
            return Stack(external_kafka, database_url, run_dir)
        # The broker started here takes plaintext; the shell's Kafka security settings,
        # for another cluster, would keep the benches and their servers off it.
        drop_settings_from(os.environ, KAFKA_SECURITY_SETTINGS)
        kafka = KafkaBroker(run_dir / "kafka")
        postgres = PostgresServer(run_dir / "postgres")
        self._servers = [kafka, postgres]
        started = time.monotonic()
        # Both start before either is waited for: initdb runs while the broker's JVM boots.
        for server in self._servers:
            server.start(wait=False)
        for server in self._servers:
            server.wait_until_ready()
        apply_migrations(postgres.url)
        log(f"Kafka and PostgreSQL ready in {time.monotonic() - started:.1f} s")
        return Stack(kafka.bootstrap_servers, postgres.url, run_dir)

    def stop(self) -> None:
        for server in self._servers:
            server.stop()
        if self._drop_database is not None:
            admin_url, database_url = self._drop_database
            _drop_database(admin_url, psycopg.conninfo.conninfo_to_dict(database_url)["dbname"])
        if self._stack is not None:
            shutil.rmtree(self._stack.run_dir, ignore_errors=True)
        self._servers, self._stack, self._drop_database = [], None, None


_shared = _SharedStack()


def stack() -> Stack:
    """Kafka and PostgreSQL for this bench run (see the module docstring)."""
    return _shared.get()


@contextlib.contextmanager
def second_database(stack: Stack) -> Iterator[Stack]:
    """The same stack on another, migrated database of the same server, dropped afterwards:
    for a bench that takes turns between two datasets instead of rebuilding one."""
    name = f"bench_{uuid.uuid4().hex[:8]}"
    database_url = _create_database(stack.database_url, name)
    try:
        apply_migrations(database_url)
        yield replace(stack, database_url=database_url)
    finally:
        _drop_database(stack.database_url, name)


def bench_settings(stack: Stack, **overrides: object) -> Settings:
    """Settings on the bench stack with a topic pair and consumer group of their own."""
    suffix = uuid.uuid4().hex[:8]
    fields: dict[str, object] = {
        "database_url": stack.database_url,
        "kafka_bootstrap_servers": stack.kafka_bootstrap_servers,
        "kafka_moderation_topic": f"bench-moderation-{suffix}",
        "kafka_dlq_topic": f"bench-moderation_dlq-{suffix}",
        "kafka_consumer_group": f"bench-consumer-{suffix}",
        "model_uri": MODEL_URI,
        "log_level": "WARNING",
    }
    fields.update(overrides)
    return Settings(**fields)


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a function process read `settings`."""
    return {
        "DATABASE_URL": settings.database_url,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "KAFKA_MODERATION_TOPIC": settings.kafka_moderation_topic,
        "KAFKA_DLQ_TOPIC": settings.kafka_dlq_topic,
        "KAFKA_CONSUMER_GROUP": settings.kafka_consumer_group,
        "MODEL_URI": settings.model_uri,
        "LOG_LEVEL": settings.log_level,
        "API_KEYS": "",
        # The consumer's own ops endpoints: loopback only, like every bench server.
        "OPS_HOST": "127.0.0.1",
    }


@contextlib.contextmanager
def fresh_topics(settings: Settings) -> Iterator[Settings]:
    """Create the settings' topics (3 partitions by default) and delete them afterwards."""
    ensure_topics(settings)
    try:
        yield settings
    finally:
        try:
            delete_topics(settings, timeout_s=10.0)
        except TopicSetupError as error:
            log(f"bench topics were not deleted (harmless, unique names): {error}")


def _create_database(admin_url: str, name: str) -> str:
    with connect(admin_url) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    parts = psycopg.conninfo.conninfo_to_dict(admin_url)
    parts["dbname"] = name
    return psycopg.conninfo.make_conninfo(**parts)


def _drop_database(admin_url: str, name: str) -> None:
    with connect(admin_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _clean_abandoned_run_dirs() -> None:
    """Stop the servers of bench runs that died before their clean-up, delete their folders."""
    run_dirs.clean_abandoned_run_dirs(BENCH_INFRA_ROOT, owner_marker=OWNER_MARKER)
