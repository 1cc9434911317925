"""The stack behind `python -m infra up|down`: Kafka and PostgreSQL that outlive the command.

Their data, logs and pids live in var/infra/ (kafka/, postgres/), so `up` run
again finds them running and `down` finds what to stop. One `up` or `down` at a time
works on a folder; another one waits for it.
"""

from __future__ import annotations

import sys
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from infra import _process
from infra.kafka_broker import KafkaBroker
from infra.kafka_config import SASL_PASSWORD, SASL_USERNAME
from infra.kafka_jars import LOCK_TIMEOUT_S as JARS_LOCK_TIMEOUT_S
from infra.postgres_server import PostgresServer
from shared.db.migrations import apply_migrations
from shared.kafka.topics import ensure_topics
from shared.settings import get_settings, shown_database_url

REPO_ROOT = Path(__file__).resolve().parents[1]
STATE_DIR = REPO_ROOT / "var" / "infra"
DEFAULT_KAFKA_PORT = 9092
DEFAULT_POSTGRES_PORT = 5432
LOCK_FILE = "infra.lock"
# Longer than an `up` takes: Maven's first download of the jars, then both start-ups.
LOCK_TIMEOUT_S = JARS_LOCK_TIMEOUT_S + 120.0


@dataclass(frozen=True)
class LocalStack:
    kafka_bootstrap_servers: str
    database_url: str


def up(
    state_dir: Path = STATE_DIR,
    *,
    kafka_port: int = DEFAULT_KAFKA_PORT,
    postgres_port: int = DEFAULT_POSTGRES_PORT,
) -> LocalStack:
    """Start whatever is not running yet, migrate the database and create the topics."""
    with _one_at_a_time(state_dir):
        return _up(state_dir, kafka_port=kafka_port, postgres_port=postgres_port)


def _up(state_dir: Path, *, kafka_port: int, postgres_port: int) -> LocalStack:
    postgres = PostgresServer(state_dir / "postgres")
    kafka = KafkaBroker(state_dir / "kafka")
    # Both start before either is waited for: initdb runs while the broker's JVM boots.
    if kafka.is_running():
        _log(f"Kafka is already running (pid {kafka.pid})")
    else:
        kafka.port = _port_for("Kafka", kafka_port)
        kafka.controller_port = kafka.sasl_port = kafka.ssl_port = None
        kafka.start(wait=False)
    if postgres.is_running():
        _log(f"PostgreSQL is already running (pid {postgres.pid})")
    else:
        postgres.port = _port_for("PostgreSQL", postgres_port)
        postgres.start(wait=False)
    postgres.wait_until_ready()
    kafka.wait_until_ready()
    # The password stays off the terminal: the export lines on stdout carry it.
    password = postgres.password_path
    kept = f", password in {password}" if password.exists() else ""
    _log(
        f"PostgreSQL: {shown_database_url(postgres.url)}"
        f" (pid {postgres.pid}, log {postgres.log_path}{kept})"
    )
    _log(f"Kafka: {kafka.bootstrap_servers} (pid {kafka.pid}, log {kafka.log_path})")
    # Either port is None for a broker started before it had the listener.
    if kafka.sasl_port is not None:
        _log(
            f"Kafka over SASL_SSL: {kafka.sasl_bootstrap_servers} (PLAIN, {SASL_USERNAME} /"
            f" {SASL_PASSWORD}, KAFKA_SSL_CA_LOCATION={kafka.ca_location})"
        )
    if kafka.ssl_port is not None:
        client = kafka.client_identity
        _log(
            f"Kafka over mutual TLS (SSL): {kafka.ssl_bootstrap_servers}"
            f" (KAFKA_SSL_CA_LOCATION={kafka.ca_location},"
            f" KAFKA_SSL_CERTIFICATE_LOCATION={client.certificate},"
            f" KAFKA_SSL_KEY_LOCATION={client.key}, KAFKA_SSL_KEY_PASSWORD={client.key_password})"
        )

    apply_migrations(postgres.url)
    settings = (
        get_settings()
        .for_plaintext_kafka(kafka.bootstrap_servers)
        .model_copy(update={"database_url": postgres.url})
    )
    ensure_topics(settings)
    _log(
        f"migrations applied; topics {settings.kafka_moderation_topic}, {settings.kafka_dlq_topic}"
    )
    return LocalStack(kafka_bootstrap_servers=kafka.bootstrap_servers, database_url=postgres.url)


def down(state_dir: Path = STATE_DIR) -> None:
    """Stop both servers (their data stays for the next `up`); a no-op when nothing runs."""
    with _one_at_a_time(state_dir):
        _down(state_dir)


def _down(state_dir: Path) -> None:
    stopped = False
    for name, server in (
        ("Kafka", KafkaBroker(state_dir / "kafka")),
        ("PostgreSQL", PostgresServer(state_dir / "postgres")),
    ):
        if server.is_running():
            _log(f"stopping {name} (pid {server.pid})")
            server.stop()
            stopped = True
    if not stopped:
        _log("nothing is running")


def _one_at_a_time(state_dir: Path) -> AbstractContextManager[None]:
    # Two `up`s at once each wrote server.properties and formatted the storage, and ran
    # initdb over each other: both failed, and broker.json named a controller port the
    # running broker did not use. The servers are looked up only once this is held.
    state_dir.mkdir(parents=True, exist_ok=True)
    return _process.exclusive_lock(state_dir / LOCK_FILE, LOCK_TIMEOUT_S)


def _port_for(name: str, preferred: int) -> int:
    if _process.port_is_free(preferred):
        return preferred
    port = _process.free_port()
    _log(f"port {preferred} is taken; {name} will listen on {port}")
    return port


def _log(message: str) -> None:
    # stdout carries only the export lines, for `eval "$(make -s infra-up)"`.
    print(message, file=sys.stderr)
