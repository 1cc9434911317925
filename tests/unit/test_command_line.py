"""The entry points configured by the environment alone answer --help without doing their
work, and refuse arguments they do not take."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from shared.db.migrations import server_of
from shared.runner.targets import REPO_ROOT
from tests.python_snippets import run_python

COMMANDS = (
    "shared.db.migrations",
    "shared.kafka.topics",
    "shared.runner.consumer",
    "shared.runner.relay",
)
# Nothing listens on port 1: a command that ignored --help would fail on it, or, for the
# long-running ones, keep trying until the timeout.
UNREACHABLE = {
    "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
    "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
}


def run(module: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO_ROOT,
        env={**os.environ, **UNREACHABLE, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize("module", COMMANDS)
def test_help_prints_the_usage_and_exits_without_connecting(module):
    result = run(module, "--help")

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: python -m {module} [-h]")
    assert "every setting comes from the environment" in result.stdout
    assert result.stderr == ""


@pytest.mark.parametrize("module", COMMANDS)
def test_an_argument_is_refused_rather_than_ignored(module):
    result = run(module, "--batch-size=5")

    assert result.returncode == 2
    assert "unrecognized arguments: --batch-size=5" in result.stderr


@pytest.mark.parametrize(
    ("module", "args"),
    [
        *((module, ()) for module in COMMANDS),
        ("shared.ops.check", ()),
        ("shared.moderation.republish", ("--published-before-s", "3600")),
        ("shared.moderation.prune", ("--older-than-days", "30")),
    ],
)
def test_an_invalid_setting_ends_the_command_with_one_line_naming_it(module, args):
    result = run(module, *args, DB_POOL_MAX_SIZE="-1")

    assert result.returncode == 1
    (line,) = (result.stderr + result.stdout).strip().splitlines()
    assert "invalid setting: DB_POOL_MAX_SIZE" in line and "got '-1'" in line


def test_a_consumer_without_its_model_ends_with_one_line_saying_why(tmp_path):
    result = run("shared.runner.consumer", MODEL_URI=str(tmp_path / "none"), LOG_LEVEL="INFO")

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("consumer: start-up failed: no model_card.json in model directory")


def test_a_consumer_whose_ops_host_is_not_this_machine_ends_with_one_line_naming_it():
    result = run("shared.runner.consumer", OPS_HOST="no-such-host.invalid", PORT="18999")

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "consumer: start-up failed: cannot listen on no-such-host.invalid:18999: "
    )
    assert last.endswith("(OPS_HOST, PORT)")


def test_the_check_command_fails_when_any_check_it_runs_fails():
    # A set-up job's health check: the model loading is no use while PostgreSQL is down.
    result = run("shared.ops.check", "database", "model")

    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.startswith("database: FAILED: PostgreSQL unavailable")
    assert "model: ok: model " in result.stdout


def test_migrations_that_fail_name_the_server_and_never_its_password():
    result = run(
        "shared.db.migrations", DATABASE_URL="postgresql://app:S3cret@127.0.0.1:1/moderation"
    )

    assert result.returncode == 1
    assert result.stderr.startswith("migrations failed on 127.0.0.1:1/moderation: ")
    assert "S3cret" not in result.stderr


def test_a_url_option_pgmigrates_older_libpq_cannot_read_is_named_before_connecting():
    # psycopg's bundled libpq takes load_balance_hosts (PostgreSQL 16 on); psycopg2,
    # which pgmigrate connects with, links the system's, which may not.
    url = "postgresql://app:S3cret@127.0.0.1:1/moderation?load_balance_hosts=random"
    older = run_python(
        "import sys, psycopg2.extensions as e; sys.exit(e.libpq_version() >= 160000)"
    )
    if older.returncode != 0:
        pytest.skip("pgmigrate's libpq here reads load_balance_hosts")

    result = run("shared.db.migrations", DATABASE_URL=url)

    assert result.returncode == 1
    assert 'invalid connection option "load_balance_hosts"' in result.stderr
    assert "run the migrations with a URL without that option" in result.stderr
    assert "Connection refused" not in result.stderr  # refused before connecting
    assert "S3cret" not in result.stderr


def test_a_multi_host_url_names_each_server_with_its_port():
    assert server_of("postgresql://a:6432,b/moderation") == "a:6432,b:5432/moderation"


def test_migrations_name_the_server_libpq_would_use_and_no_part_of_a_password(monkeypatch):
    monkeypatch.setenv("PGHOST", "10.0.0.5")
    monkeypatch.setenv("PGPORT", "6543")

    from_the_environment = server_of("postgresql:///moderation")
    cut_short = server_of("postgresql://app:hunter2@Secret@localhost:1/moderation")

    assert from_the_environment == "10.0.0.5:6543/moderation"
    assert "Secret" not in cut_short and "hunter2" not in cut_short


@pytest.mark.parametrize("days", ["1", "6.9", "nan", "-7", "36501", "1e12", "inf"])
def test_prune_refuses_a_cutoff_inside_the_topics_retention_or_past_a_century(days):
    # Before connecting: PostgreSQL's own refusal of a huge interval would exit 1, which a
    # Job retries as an outage.
    result = run("shared.moderation.prune", "--older-than-days", days)

    assert result.returncode == 2
    assert "--older-than-days must be from 7 to 36500" in result.stderr


@pytest.mark.parametrize("seconds", ["-1", "nan", "inf", "1e300", "3153600001"])
def test_republish_refuses_a_negative_or_endless_age_before_connecting(seconds):
    result = run("shared.moderation.republish", "--published-before-s", seconds)

    assert result.returncode == 2
    assert "--published-before-s must be from 0 to 3153600000" in result.stderr


@pytest.mark.parametrize("seconds", ["-1", "0", "nan", "inf", "soon"])
@pytest.mark.parametrize(
    "command", [("shared.ops.check",), ("shared.ops.probe", "http://127.0.0.1:1/")]
)
def test_the_ops_commands_refuse_a_timeout_that_is_no_wait_before_waiting(command, seconds):
    # A negative timeout crashed the probe with a traceback (exit 1, read as "unhealthy").
    result = run(*command, "--timeout", seconds)

    assert result.returncode == 2, result.stderr
    assert "--timeout: expected a" in result.stderr
    assert "Traceback" not in result.stderr
