"""Runner flags: each overrides its setting; the env var is next; then the default."""

from __future__ import annotations

import os

import pytest

from shared.runner.cli import RUNNER_ONLY_VARIABLES, parse_options
from shared.runner.embedded import DEFAULT_STATE_DIR, env_is_set
from shared.settings import read_settings
from shared.settings_environment import setting_variable


def test_each_flag_overrides_its_setting(monkeypatch):
    monkeypatch.setenv("PORT", "9002")
    monkeypatch.setenv("CONSUMER_BATCH_SIZE", "7")

    options = parse_options(
        [
            "--port=9001",
            "--log-level=debug",
            "--batch-size=50",
            "--poll-timeout=0.25",
            "--db-pool-size=3",
        ]
    )

    settings = options.settings
    assert settings.port == 9001
    assert settings.log_level == "DEBUG"
    assert settings.consumer_batch_size == 50
    assert settings.consumer_poll_timeout_s == 0.25
    assert settings.db_pool_max_size == 3


def test_env_vars_apply_when_no_flag_is_given(monkeypatch):
    monkeypatch.setenv("PORT", "9002")
    monkeypatch.setenv("CONSUMER_POLL_TIMEOUT_S", "0.5")

    settings = parse_options([]).settings

    assert settings.port == 9002
    assert settings.consumer_poll_timeout_s == 0.5


def test_defaults_apply_without_flags_or_env(monkeypatch):
    for name in ("PORT", "LOG_LEVEL", "CONSUMER_BATCH_SIZE", *RUNNER_ONLY_VARIABLES):
        monkeypatch.delenv(name, raising=False)

    options = parse_options([])

    assert options.settings.port == 8000
    assert options.host == "127.0.0.1"
    assert options.seed_demo is None
    assert options.state_dir == DEFAULT_STATE_DIR.resolve()


def test_seed_demo_can_be_forced_on_or_off():
    assert parse_options(["--seed-demo"]).seed_demo is True
    assert parse_options(["--no-seed-demo"]).seed_demo is False


def test_runner_only_flags_read_their_env_vars_and_a_flag_still_wins(monkeypatch, tmp_path):
    monkeypatch.setenv("HOST", "0.0.0.0")
    monkeypatch.setenv("RUNNER_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("RUNNER_SEED_DEMO", "false")

    options = parse_options([])
    overridden = parse_options(["--host=127.0.0.2", "--seed-demo"])

    assert (options.host, options.state_dir, options.seed_demo) == ("0.0.0.0", tmp_path, False)
    assert (overridden.host, overridden.seed_demo) == ("127.0.0.2", True)


def test_a_seed_demo_env_var_that_is_not_a_boolean_exits_with_status_2(monkeypatch, capsys):
    monkeypatch.setenv("RUNNER_SEED_DEMO", "maybe")

    with pytest.raises(SystemExit) as exit_info:
        parse_options([])

    assert exit_info.value.code == 2
    assert "RUNNER_SEED_DEMO: expected true, false, yes, no" in capsys.readouterr().err


@pytest.mark.parametrize(("value", "seeded"), [("TRUE", True), (" Yes ", True), ("Off", False)])
def test_a_seed_demo_env_var_is_read_whatever_its_case(monkeypatch, value, seeded):
    # As shells and compose files spell booleans: `True` must not exit as invalid.
    monkeypatch.setenv("RUNNER_SEED_DEMO", value)

    assert parse_options([]).seed_demo is seeded


def test_an_invalid_value_exits_with_status_2_naming_the_setting(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_options(["--log-level=LOUD"])

    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "LOG_LEVEL" in err and "(--log-level sets LOG_LEVEL)" in err
    # No usage block: the flag was spelt right, its value was not.
    assert "usage:" not in err


def test_an_invalid_env_var_exits_with_status_2_naming_it_and_no_flag(monkeypatch, capsys):
    monkeypatch.setenv("LOG_LEVEL", "LOUD")

    with pytest.raises(SystemExit) as exit_info:
        parse_options(["--port=9000"])

    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("local_runner.py: invalid setting: LOG_LEVEL")
    assert "sets" not in err and "usage:" not in err


def test_env_is_set_is_case_insensitive_and_ignores_empty_values():
    assert env_is_set("DATABASE_URL", {"database_url": "postgresql://x"})
    assert not env_is_set("DATABASE_URL", {"DATABASE_URL": ""})
    assert not env_is_set("DATABASE_URL", {})


@pytest.mark.parametrize(
    "spellings",
    [
        {"MODEL_URI": "/models/upper", "model_uri": "/models/lower"},
        {"model_uri": "/models/lower", "MODEL_URI": "/models/upper"},
        {"model_uri": "/models/lower", "MODEL_URI": ""},
    ],
)
def test_a_setting_spelt_twice_is_read_as_the_settings_read_it(monkeypatch, spellings):
    # `python -m shared.model evaluate` must score the model the service serves.
    monkeypatch.delenv("MODEL_URI", raising=False)
    for variable, value in spellings.items():
        monkeypatch.setenv(variable, value)

    served = read_settings().model_uri

    assert setting_variable("MODEL_URI", os.environ) == (served or None)
