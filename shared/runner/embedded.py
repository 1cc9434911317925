"""The runner's no-setup defaults: an embedded PostgreSQL when DATABASE_URL is not set,
the in-memory mock Kafka when KAFKA_BOOTSTRAP_SERVERS is not set."""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import dataclass
from pathlib import Path

from shared.runner.mock_kafka import MOCK_PARTITIONS, MockKafkaCluster
from shared.runner.targets import REPO_ROOT
from shared.settings import Settings, shown_database_url
from shared.settings_environment import setting_variable

log = logging.getLogger(__name__)

# Git-ignored (var/), and kept between runs, so the demo data and tasks survive a restart.
DEFAULT_STATE_DIR = REPO_ROOT / "var" / "runner"


@dataclass(frozen=True, slots=True)
class Backends:
    """The settings with the servers' addresses filled in, and where those servers came from."""

    settings: Settings
    embedded_database: bool
    in_memory_kafka: bool
    state_dir: Path

    def describe(self) -> list[str]:
        database = "PostgreSQL from DATABASE_URL"
        if self.embedded_database:
            # Its port is picked at each start: the URL is what a psql session needs, with
            # the password that infra/postgres_server.py keeps next to the data.
            base_dir = _shown(self.state_dir / "postgres")
            url = self.settings.database_url
            shown = shown_database_url(url)
            password = f" (password in {base_dir}/password)" if shown != url else ""
            database = f"embedded PostgreSQL at {shown}{password}, data in {base_dir}"
        kafka = (
            f"IN-MEMORY mock Kafka (librdkafka test.mock.num.brokers) at "
            f"{self.settings.kafka_bootstrap_servers}: topics have {MOCK_PARTITIONS} "
            "partitions and every record is lost at exit; set KAFKA_BOOTSTRAP_SERVERS "
            "and DATABASE_URL for a real broker and database (make infra-up)"
            if self.in_memory_kafka
            else f"Kafka at {self.settings.kafka_bootstrap_servers}"
        )
        return [f"database: {database}", f"kafka:    {kafka}"]


def env_is_set(name: str, environ: Mapping[str, str]) -> bool:
    """Settings reads env vars case-insensitively, so this does too."""
    return setting_variable(name, environ) is not None


def start_backends(
    settings: Settings,
    environ: Mapping[str, str],
    stack: ExitStack,
    state_dir: Path,
    *,
    uninterrupted: Callable[[], AbstractContextManager[None]] = nullcontext,
) -> Backends:
    """Start what is not configured; `stack` stops it again, after its clients are closed.

    The embedded PostgreSQL starts inside `uninterrupted()`: a first start runs initdb,
    which, cut short, would leave a data directory no later start can use."""
    updates: dict[str, str] = {}
    embedded_database = not env_is_set("DATABASE_URL", environ)
    in_memory_kafka = not env_is_set("KAFKA_BOOTSTRAP_SERVERS", environ)
    if embedded_database:
        with uninterrupted():
            updates["database_url"] = _start_embedded_postgres(state_dir / "postgres", stack)
    if in_memory_kafka:
        cluster = MockKafkaCluster()
        stack.callback(cluster.close)
        settings = settings.for_plaintext_kafka(cluster.start())
        cluster.create_topics([settings.kafka_moderation_topic, settings.kafka_dlq_topic])
    return Backends(
        settings=settings.model_copy(update=updates),
        embedded_database=embedded_database,
        in_memory_kafka=in_memory_kafka,
        state_dir=state_dir,
    )


def _start_embedded_postgres(base_dir: Path, stack: ExitStack) -> str:
    # infra/ is development tooling, not part of a deployed bundle: imported only here.
    from infra.postgres_server import PostgresServer

    _claim(base_dir, stack)
    log.info("starting embedded PostgreSQL", extra={"data_dir": str(base_dir)})
    server = PostgresServer(base_dir)
    server.start()
    stack.callback(server.stop)
    return server.url


def _claim(base_dir: Path, stack: ExitStack) -> None:
    """One runner per data directory: a second one would stop the first one's server on exit."""
    base_dir.mkdir(parents=True, exist_ok=True)
    # Held open (and so locked) until the stack closes, at the runner's exit.
    lock = stack.enter_context(open(base_dir.with_suffix(".lock"), "w"))  # noqa: SIM115
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise RuntimeError(
            f"another local runner uses the embedded database in {_shown(base_dir)}; stop it "
            "first, or give this one --state-dir, or DATABASE_URL together with"
            " KAFKA_BOOTSTRAP_SERVERS"
        ) from None


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)
