"""The image's entry point: the function's source and server settings, then functions-framework."""

from __future__ import annotations

import pytest

from shared.runner import serve_function
from shared.settings import Settings


@pytest.fixture
def environ(monkeypatch) -> dict[str, str]:
    # A private environment: main() sets variables for the process it execs into.
    environment: dict[str, str] = {}
    monkeypatch.setattr(serve_function.os, "environ", environment)
    return environment


@pytest.fixture
def exec_calls(monkeypatch, environ):
    calls: list[tuple[str, list[str], dict[str, str]]] = []
    monkeypatch.setattr(serve_function.shutil, "which", lambda name: f"/bin/{name}")
    monkeypatch.setattr(
        serve_function.os, "execv", lambda path, argv: calls.append((path, argv, dict(environ)))
    )
    monkeypatch.setattr(serve_function, "available_cpus", lambda: 2)
    return calls


def test_the_model_bound_function_gets_two_threads_and_a_worker_per_cpu(environ, exec_calls):
    environ["FUNCTION_TARGET"] = "predict"

    serve_function.main()

    [(path, _, environment)] = exec_calls
    assert path == "/bin/functions-framework"
    assert environment["FUNCTION_SOURCE"].endswith("functions/predict/main.py")
    assert (environment["WORKERS"], environment["THREADS"]) == ("2", "2")


@pytest.mark.parametrize("target", ["moderation_consumer", "outbox_relay"])
def test_the_consumer_and_relay_functions_get_threads_within_the_pool_on_any_machine(
    environ, exec_calls, monkeypatch, target
):
    # Each of their requests holds a pooled connection throughout; functions-framework's
    # own 4 threads per CPU would queue them for one on 3 CPUs or more.
    monkeypatch.setattr(serve_function, "available_cpus", lambda: 16)
    environ["FUNCTION_TARGET"] = target

    serve_function.main()

    [(_, _, environment)] = exec_calls
    assert environment["WORKERS"] == "16"
    assert int(environment["THREADS"]) <= Settings.model_fields["db_pool_max_size"].default


def test_the_lookup_functions_get_four_threads_within_the_pool(environ, exec_calls):
    environ["FUNCTION_TARGET"] = "simple_predict"

    serve_function.main()

    [(_, _, environment)] = exec_calls
    assert (environment["WORKERS"], environment["THREADS"]) == ("2", "4")
    assert int(environment["THREADS"]) <= Settings.model_fields["db_pool_max_size"].default


def test_the_deployment_s_own_settings_win(environ, exec_calls):
    environ.update(FUNCTION_TARGET="predict", THREADS="3", WORKERS="5")

    serve_function.main()

    [(_, _, environment)] = exec_calls
    assert (environment["WORKERS"], environment["THREADS"]) == ("5", "3")


def test_a_deployment_s_own_function_source_wins(environ, exec_calls):
    # An image may bundle the function elsewhere; only an unset FUNCTION_SOURCE is looked up.
    environ.update(FUNCTION_TARGET="predict", FUNCTION_SOURCE="/srv/predict/main.py")

    serve_function.main()

    [(_, _, environment)] = exec_calls
    assert environment["FUNCTION_SOURCE"] == "/srv/predict/main.py"


def test_an_unknown_target_is_refused_without_starting_anything(environ, exec_calls, capsys):
    environ["FUNCTION_TARGET"] = "nope"

    assert serve_function.main() == 2
    assert exec_calls == []
    assert "unknown function target 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [
        ("100000 100000\n", 1),  # a container limited to one CPU
        ("150000 100000\n", 2),  # one and a half: rounded up
        ("max 100000\n", 2),  # no limit: the CPUs it may run on
        ("garbled", 2),
    ],
)
def test_workers_follow_the_containers_cpu_limit(tmp_path, monkeypatch, cpu_max, expected):
    monkeypatch.setattr(serve_function.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    limit = tmp_path / "cpu.max"
    limit.write_text(cpu_max)

    assert serve_function.available_cpus(limit) == expected


def test_without_a_cgroup_limit_file_the_usable_cpus_count(tmp_path, monkeypatch):
    monkeypatch.setattr(
        serve_function.os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False
    )

    assert serve_function.available_cpus(tmp_path / "absent") == 3


def test_help_without_a_target_says_how_to_pick_one(environ, exec_calls, capsys, monkeypatch):
    monkeypatch.setattr(serve_function.sys, "argv", ["serve_function", "--help"])

    assert serve_function.main() == 0

    assert exec_calls == []
    assert "FUNCTION_TARGET picks the" in capsys.readouterr().out
