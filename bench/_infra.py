"""What the end-to-end benches share: Kafka and PostgreSQL, seeded rows, fresh topics, servers.

Kafka and PostgreSQL start once per bench run, on first use, and stop when the
process exits; KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL, when both are set, name
servers to use instead (each run then works in a database of its own, dropped at
the end). Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import psycopg
from confluent_kafka import Producer

from bench.termination import exit_cleanly_on_sigterm
from infra import _process, run_dirs
from infra.kafka_broker import KafkaBroker
from infra.postgres_server import PostgresServer
from shared.db.migrations import apply_migrations
from shared.kafka.config import connection_config
from shared.kafka.envelope import encode_task_message
from shared.kafka.topics import TopicSetupError, delete_topics, ensure_topics
from shared.runner.targets import find_target
from shared.settings import KAFKA_SECURITY_SETTINGS, Settings
from shared.settings_environment import drop_settings_from

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH_INFRA_ROOT = REPO_ROOT / "var" / "bench-infra"
OWNER_FILE = "owner.pid"
# In the command line of `python -m bench`, however it was started.
OWNER_MARKER = "bench"
MODEL_URI = str(REPO_ROOT / "var" / "models" / "default")
TABLES = "ads, sellers, moderation_results, dead_letters"
SERVER_START_TIMEOUT_S = 60.0
SERVER_STOP_TIMEOUT_S = 10.0
AD_TEMPLATES = 2_000


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


# --- rows ---------------------------------------------------------------------------


def connect(database_url: str) -> psycopg.Connection:
    return psycopg.connect(database_url, autocommit=True, connect_timeout=10)


def reset_tables(database_url: str) -> None:
    with connect(database_url) as conn:
        conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")


def reset_tasks(database_url: str) -> None:
    """No tasks (nor dead letters) left; the ads stay."""
    with connect(database_url) as conn:
        conn.execute("TRUNCATE moderation_results, dead_letters RESTART IDENTITY CASCADE")


def seed_ads(database_url: str, count: int) -> None:
    """Grow `ads` to `count` rows (ids 1..count) of synthetic ads, one seller per ten ads."""
    from shared.model.synthetic import generate_ads

    templates = generate_ads(AD_TEMPLATES).ads
    with connect(database_url) as conn:
        have = conn.execute("SELECT count(*) FROM ads").fetchone()[0]
        if have >= count:
            return
        sellers = conn.execute("SELECT count(*) FROM sellers").fetchone()[0]
        wanted_sellers = count // 10 + 1
        conn.execute(
            "INSERT INTO sellers (is_verified)"
            " SELECT n %% 3 <> 0 FROM generate_series(%s::bigint, %s::bigint) AS n",
            (sellers + 1, wanted_sellers),
        )
        conn.execute(
            "CREATE TEMP TABLE ad_templates"
            " (k int PRIMARY KEY, name text, description text, category int, images_qty int)"
        )
        with conn.cursor().copy("COPY ad_templates FROM STDIN") as copy:
            for k, ad in enumerate(templates):
                copy.write_row((k, ad.name, ad.description, ad.category, ad.images_qty))
        conn.execute(
            """
            INSERT INTO ads (seller_id, name, description, category, images_qty)
            SELECT 1 + n %% %(sellers)s, t.name, t.description, t.category, t.images_qty
            FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS n
            JOIN ad_templates t ON t.k = n %% %(templates)s
            ORDER BY n
            """,
            {
                "sellers": wanted_sellers,
                "first": have + 1,
                "last": count,
                "templates": len(templates),
            },
        )
        conn.execute("VACUUM ANALYZE ads")
        conn.execute("VACUUM ANALYZE sellers")


def seed_completed_tasks(database_url: str, count: int, ads: int) -> None:
    """Add `count` finished tasks (moderation history) spread over ads 1..`ads`."""
    with connect(database_url) as conn:
        conn.execute(
            """
            INSERT INTO moderation_results (item_id, status, is_violation, probability,
                model_version, attempts, published_at, processed_at)
            SELECT 1 + (n * 7919) %% %s, 'completed', false, 0.1, 'bench', 1, now(), now()
            FROM generate_series(1, %s::bigint) AS n
            """,
            (ads, count),
        )
        conn.execute("VACUUM ANALYZE moderation_results")


def seed_pending_tasks(database_url: str, count: int, ads: int) -> list[tuple[int, int]]:
    """Add `count` pending, published tasks on ads spread over 1..`ads`; (task_id, item_id)."""
    with connect(database_url) as conn:
        rows = conn.execute(
            """
            INSERT INTO moderation_results (item_id, published_at)
            SELECT 1 + (n * 104729) %% %s, now() FROM generate_series(1, %s::bigint) AS n
            RETURNING id, item_id
            """,
            (ads, count),
        ).fetchall()
    # Not analysed afterwards: a backlog arrives after the table's last ANALYZE, whose
    # statistics then know of no pending task, and the consumer has to cope with that
    # (an ANALYZE here hid a plan 13x slower at 1M rows; shared/db/tasks.py, _COMPLETE).
    return [(row[0], row[1]) for row in rows]


def delete_tasks(database_url: str, task_ids: Sequence[int]) -> None:
    with connect(database_url) as conn:
        conn.execute("DELETE FROM dead_letters WHERE task_id = ANY(%s)", (list(task_ids),))
        conn.execute("DELETE FROM moderation_results WHERE id = ANY(%s)", (list(task_ids),))


def vacuum(database_url: str, table: str) -> None:
    with connect(database_url) as conn:
        conn.execute(f"VACUUM ANALYZE {table}")


def count_by_status(database_url: str, task_ids: Sequence[int]) -> dict[str, int]:
    with connect(database_url) as conn:
        rows = conn.execute(
            "SELECT status, count(*) FROM moderation_results WHERE id = ANY(%s) GROUP BY status",
            (list(task_ids),),
        ).fetchall()
    return {status: count for status, count in rows}


def produce_tasks(settings: Settings, tasks: Sequence[tuple[int, int]]) -> None:
    """Publish one task message per (task_id, item_id), keyed by item_id like the service."""
    producer = Producer(
        {
            **connection_config(settings),
            "linger.ms": 20,
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": 1_000_000,
        }
    )
    for task_id, item_id in tasks:
        key, value = encode_task_message(task_id, item_id)
        producer.produce(settings.kafka_moderation_topic, key=key, value=value)
        producer.poll(0)
    remaining = producer.flush(60)
    if remaining:
        raise RuntimeError(f"{remaining} of {len(tasks)} task records not delivered in 60 s")


# --- function servers ---------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    url: str
    pid: int


@contextlib.contextmanager
def function_server(
    source: Path,
    target: str,
    env: dict[str, str],
    *,
    log_dir: Path,
    server_as: str | None = None,
    cpus: int = 1,
) -> Iterator[Server]:
    """`functions-framework --source S --target T` (gunicorn) on a free loopback port.

    gunicorn gets the WORKERS and THREADS the image gives function `server_as` (default:
    `target`) on a machine of `cpus` CPUs, so a baseline can run on exactly a function's
    settings. One CPU by default: one worker, and the load generator has the other core.
    """
    port = _process.free_port()
    command = [
        sys.executable,
        "-m",
        "functions_framework",
        "--source",
        str(source),
        "--target",
        target,
        "--host",
        _process.LOCALHOST,
        "--port",
        str(port),
    ]
    log_path = log_dir / f"{target}-{port}.log"
    child = _process.spawn(
        command,
        log_path=log_path,
        cwd=REPO_ROOT,
        env={**_without_debug(os.environ), **server_env(server_as or target, cpus), **env},
    )
    try:
        _wait_for_port(child, port, log_path, what=f"functions-framework {target}")
        yield Server(f"http://{_process.LOCALHOST}:{port}", child.pid)
    finally:
        stop_child(child, what=target)


def _without_debug(environ: Mapping[str, str]) -> dict[str, str]:
    """functions-framework reads DEBUG as its --debug flag, which serves with Flask's
    development server instead of gunicorn: left in, it would swap the server measured."""
    return {name: value for name, value in environ.items() if name != "DEBUG"}


def server_env(target: str, cpus: int) -> dict[str, str]:
    """WORKERS and THREADS for `target` on `cpus` CPUs, as the image's entry point sets them."""
    return find_target(target).server_env(cpus)


@contextlib.contextmanager
def python_process(
    args: Sequence[str], env: dict[str, str], *, log_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """`python ARGS` in its own process group, stopped (SIGTERM, then SIGKILL) at the end."""
    child = _process.spawn(
        [sys.executable, *args], log_path=log_path, cwd=REPO_ROOT, env={**os.environ, **env}
    )
    try:
        yield child
    finally:
        stop_child(child, what=" ".join(args))


def stop_child(child: subprocess.Popen[bytes], *, what: str) -> None:
    if child.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGTERM)
        try:
            child.wait(SERVER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log(f"{what} did not stop in {SERVER_STOP_TIMEOUT_S:.0f} s; killing it")
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.wait(5)


def http_request(
    url: str, *, method: str = "GET", body: bytes | None = None, timeout_s: float = 10.0
) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def warm_up(url: str, *, method: str, body: bytes | None, count: int = 50) -> None:
    """Send `count` requests (the first one loads the model); each must succeed."""
    for _ in range(count):
        status, payload = http_request(url, method=method, body=body, timeout_s=60.0)
        if status >= 300:
            raise RuntimeError(f"warm-up {method} {url} answered {status}: {payload[:300]!r}")


def ad_bodies(count: int) -> list[bytes]:
    """`POST /predict` bodies: synthetic ads, as a caller would send them."""
    from shared.model.synthetic import generate_ads

    return [
        json.dumps(
            {
                "item_id": ad.item_id,
                "seller_id": ad.seller_id,
                "is_verified_seller": ad.is_verified_seller,
                "name": ad.name,
                "description": ad.description,
                "category": ad.category,
                "images_qty": ad.images_qty,
            }
        ).encode()
        for ad in generate_ads(count).ads
    ]


# --- reporting ----------------------------------------------------------------------


def print_table(title: str, rows: Sequence[Sequence[object]]) -> None:
    """A small aligned table on stderr (stdout carries the runner's summary)."""
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = [title] + [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells
    ]
    print("\n".join(lines) + "\n", file=sys.stderr, flush=True)


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _wait_for_port(child: subprocess.Popen[bytes], port: int, log_path: Path, *, what: str) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while not _process.port_accepts(port):
        if child.poll() is not None:
            raise RuntimeError(
                f"{what} exited with code {child.returncode} during start-up:\n"
                f"{_process.tail(log_path)}"
            )
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{what} did not listen on port {port} within "
                f"{SERVER_START_TIMEOUT_S:.0f} s:\n{_process.tail(log_path)}"
            )
        time.sleep(0.05)


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
