"""The runner's command line: each flag overrides its setting, which otherwise comes from
its env var (the Settings field name upper-cased), which otherwise has its default."""

from __future__ import annotations

import argparse
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
    parser.add_argument(
        "--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)"
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help="where the embedded PostgreSQL keeps its data between runs (default var/runner)",
    )
    parser.add_argument(
        "--seed-demo",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="insert a few demo sellers and ads (item_id 1-5); on by default for the "
        "embedded database, off otherwise",
    )
    return parser


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
        parser.error(str(error))
    return RunnerOptions(
        settings=settings,
        host=args.host,
        seed_demo=args.seed_demo,
        state_dir=args.state_dir.resolve(),
    )
