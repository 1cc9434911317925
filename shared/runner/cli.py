"""The runner's command line: each flag overrides its setting, which otherwise comes from
its env var (the Settings field name upper-cased), which otherwise has its default."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from shared.runner.embedded import DEFAULT_STATE_DIR
from shared.settings import InvalidSettings, Settings, read_settings, warn_of_misspelt_settings

# flag -> (Settings field, type, help)
SETTING_FLAGS: dict[str, tuple[str, type, str]] = {
    "--port": ("port", int, "HTTP port"),
    "--log-level": ("log_level", str, "DEBUG, INFO, WARNING, ERROR or CRITICAL"),
    "--batch-size": ("consumer_batch_size", int, "records per consumer batch"),
    "--poll-timeout": ("consumer_poll_timeout_s", float, "seconds one Kafka poll may wait"),
    "--db-pool-size": ("db_pool_max_size", int, "most PostgreSQL connections in the pool"),
}


# The runner-only flags' variables: not settings, so a test that clears the settings from
# a child's environment clears these too.
RUNNER_ONLY_VARIABLES = ("HOST", "RUNNER_STATE_DIR", "RUNNER_SEED_DEMO")


@dataclass(frozen=True, slots=True)
class RunnerOptions:
    settings: Settings
    host: str
    # None: seed when the database is the embedded one.
    seed_demo: bool | None
    state_dir: Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="local_runner.py",
        description=(
            "Every HTTP function on one port, the Kafka poll loop feeding the consumer, "
            "and the outbox relay. Without DATABASE_URL an embedded PostgreSQL is started; "
            "without KAFKA_BOOTSTRAP_SERVERS an in-memory mock Kafka."
        ),
    )
    for flag, (field, kind, text) in SETTING_FLAGS.items():
        default = Settings.model_fields[field].default
        parser.add_argument(
            flag,
            dest=field,
            type=kind,
            default=None,
            help=f"{text} (env {field.upper()}, default {default})",
        )
    # Runner-only flags, not settings: their env vars are read here. HOST is the name
    # functions-framework's own --host reads.
    parser.add_argument(
        "--host",
        default=os.environ.get("HOST") or "127.0.0.1",
        help="interface to listen on (env HOST, default 127.0.0.1)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=os.environ.get("RUNNER_STATE_DIR") or DEFAULT_STATE_DIR,
        help="where the embedded PostgreSQL keeps its data between runs (env"
        " RUNNER_STATE_DIR, default var/runner)",
    )
    parser.add_argument(
        "--seed-demo",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="insert a few demo sellers and ads (item_id 1-5) (env RUNNER_SEED_DEMO, true or"
        " false); by default on for the embedded database, off otherwise",
    )
    return parser


# What RUNNER_SEED_DEMO may say, whatever the case.
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _seed_demo_from_env(parser: argparse.ArgumentParser) -> bool | None:
    value = os.environ.get("RUNNER_SEED_DEMO", "").strip().lower()
    if not value:
        return None
    if value not in _TRUE | _FALSE:
        parser.error(
            f"RUNNER_SEED_DEMO: expected true, false, yes, no, on, off, 1 or 0, got {value!r}"
        )
    return value in _TRUE


def parse_options(argv: Sequence[str]) -> RunnerOptions:
    """Exit with status 2 and a message naming the setting when a value is invalid."""
    parser = build_parser()
    args = parser.parse_args(list(argv))
    overrides = {
        field: getattr(args, field)
        for field, *_ in SETTING_FLAGS.values()
        if getattr(args, field) is not None
    }
    warn_of_misspelt_settings()  # first: the typo may be why the settings do not validate
    try:
        # Init arguments win over env vars in pydantic-settings: flag first, then env.
        settings = read_settings(**overrides)
    except InvalidSettings as error:
        # Not parser.error(): its usage block made a bad setting read as a mistyped flag.
        # The error names settings: a flag that gave one of them says so.
        given = [
            f"{flag} sets {field.upper()}"
            for flag, (field, *_) in SETTING_FLAGS.items()
            if field in overrides and field.upper() in str(error)
        ]
        flags = f" ({'; '.join(given)})" if given else ""
        parser.exit(2, f"{parser.prog}: {error}{flags}\n")
    return RunnerOptions(
        settings=settings,
        host=args.host,
        seed_demo=args.seed_demo if args.seed_demo is not None else _seed_demo_from_env(parser),
        state_dir=args.state_dir.resolve(),
    )
