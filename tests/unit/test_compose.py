"""docker-compose.yml and the Dockerfile, checked without a Docker engine: every command
points at a real target, every service has a health check, the settings and ports agree."""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from shared.runner.targets import HTTP_FUNCTIONS, REPO_ROOT, find_target
from shared.settings import Settings

COMPOSE = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict] = COMPOSE["services"]
APP_IMAGE = "ad-moderation:local"
APP_SERVICES = sorted(name for name, spec in SERVICES.items() if spec.get("image") == APP_IMAGE)
# functions-framework's own gunicorn settings, not ours.
SERVER_VARIABLES = {"WORKERS", "THREADS"}
LONG_RUNNING = [name for name in APP_SERVICES if SERVICES[name].get("restart") != "no"]


def _argv(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else list(command)


def _module_file(module: str) -> Path:
    path = REPO_ROOT / Path(*module.split("."))
    return path / "__main__.py" if path.is_dir() else path.with_suffix(".py")


def _defined_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}


def _assert_runs_a_real_target(argv: list[str]) -> None:
    """`functions-framework --source F --target T` or `python -m M`, pointing at real code."""
    if argv[0] == "functions-framework":
        options = dict(zip(argv[1::2], argv[2::2], strict=False))
        source = REPO_ROOT / options["--source"]
        assert source.exists(), f"{source} does not exist"
        assert options["--target"] in _defined_functions(source), argv
    elif argv[:2] == ["python", "-m"]:
        module = _module_file(argv[2])
        assert module.exists(), f"python -m {argv[2]}: no {module.relative_to(REPO_ROOT)}"
        text = module.read_text()
        assert 'if __name__ == "__main__":' in text or module.name == "__main__.py", argv
    else:
        pytest.fail(f"unexpected command {argv}: expected functions-framework or python -m")


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_has_a_health_check(name):
    healthcheck = SERVICES[name].get("healthcheck")

    assert healthcheck and healthcheck.get("test"), f"{name} has no healthcheck"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_every_app_command_points_at_a_real_target(name):
    _assert_runs_a_real_target(_argv(SERVICES[name]["command"]))


@pytest.mark.parametrize("name", APP_SERVICES)
def test_every_app_health_check_runs_real_code(name):
    test = SERVICES[name]["healthcheck"]["test"]

    assert test[0] == "CMD"
    _assert_runs_a_real_target(test[1:])


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_env_vars_are_settings_fields_with_valid_values(name):
    environment = SERVICES[name]["environment"]

    ours = {key: value for key, value in environment.items() if key not in SERVER_VARIABLES}
    unknown = sorted(key for key in ours if key.lower() not in Settings.model_fields)
    settings = Settings(**{key.lower(): str(value) for key, value in ours.items()})

    assert unknown == []
    assert settings.port == 8080


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_published_container_port_is_the_port_setting_and_the_health_check_port(name):
    service = SERVICES[name]
    [mapping] = service["ports"]
    container_port = int(str(mapping).rsplit(":", 1)[1])

    assert container_port == int(service["environment"]["PORT"])
    assert f":{container_port}/" in service["healthcheck"]["test"][-1]


PUBLISHED = [str(mapping) for spec in SERVICES.values() for mapping in spec.get("ports", [])]


def test_host_ports_do_not_collide_and_the_kafka_console_is_on_8080():
    host_ports = [mapping.split(":")[1] for mapping in PUBLISHED]

    assert len(host_ports) == len(set(host_ports)), host_ports
    assert "127.0.0.1:8080:8080" in SERVICES["kafka-console"]["ports"]


def test_every_port_is_published_on_loopback_alone():
    # Docker publishes a bare "9092:9092" on every interface, past a host firewall such
    # as ufw: a plaintext broker, an unauthenticated console and postgres/postgres.
    assert [mapping for mapping in PUBLISHED if not mapping.startswith("127.0.0.1:")] == []


def test_each_http_function_runs_as_its_own_service_with_its_own_target():
    targets = {}
    for name in APP_SERVICES:
        argv = _argv(SERVICES[name]["command"])
        if argv[0] == "functions-framework":
            targets[name] = argv[argv.index("--target") + 1]

    assert sorted(targets.values()) == sorted(f.target for f in HTTP_FUNCTIONS)
    assert all(name == target for name, target in targets.items())


def test_the_consumer_relay_and_one_shot_jobs_are_there():
    commands = {name: _argv(SERVICES[name]["command"]) for name in APP_SERVICES}

    assert commands["consumer"][-1] == "shared.runner.consumer"
    assert commands["relay"][-1] == "shared.runner.relay"
    assert commands["migrate"][-1] == "shared.db.migrations"
    assert commands["topics"][-1] == "shared.kafka.topics"
    for job in ("migrate", "topics"):
        assert SERVICES[job]["restart"] == "no"
    for name in LONG_RUNNING:
        depends_on = SERVICES[name]["depends_on"]
        assert depends_on["migrate"]["condition"] == "service_completed_successfully"
        assert depends_on["topics"]["condition"] == "service_completed_successfully"


def test_kafka_runs_in_kraft_mode_and_the_apps_use_its_internal_listener():
    kafka = SERVICES["kafka"]
    environment = kafka["environment"]
    bootstrap = SERVICES["predict"]["environment"]["KAFKA_BOOTSTRAP_SERVERS"]
    host, port = bootstrap.split(":")

    assert kafka["image"].startswith("apache/kafka:")
    assert "controller" in environment["KAFKA_PROCESS_ROLES"]
    assert not any("ZOOKEEPER" in key for key in environment)
    assert host == "kafka"
    assert f"//{bootstrap}" in environment["KAFKA_ADVERTISED_LISTENERS"]
    assert re.search(rf"://:{port}\b", environment["KAFKA_LISTENERS"])


def test_the_apps_database_url_names_the_postgres_service_and_its_database():
    url = urlparse(SERVICES["predict"]["environment"]["DATABASE_URL"])
    postgres = SERVICES["postgres"]["environment"]

    assert (url.hostname, url.port) == ("postgres", 5432)
    assert url.path.lstrip("/") == postgres["POSTGRES_DB"]
    assert (url.username, url.password) == (
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_PASSWORD"],
    )


def test_the_model_uri_is_where_the_dockerfile_trains_the_model():
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    uri = SERVICES["predict"]["environment"]["MODEL_URI"]

    assert "train --out var/models/default" in dockerfile
    assert uri == "/app/var/models/default"
    assert f"MODEL_URI={uri}" in dockerfile


def test_the_dockerfile_copies_what_exists_and_its_command_is_real():
    lines = (REPO_ROOT / "Dockerfile").read_text().splitlines()
    # Every source of each COPY: all its words but the flags and the destination.
    copied = [
        source
        for line in lines
        if line.startswith("COPY ")
        for source in line.split()[1:-1]
        if not source.startswith("--")
    ]
    [cmd] = [line for line in lines if line.startswith("CMD ")]
    ignored = (REPO_ROOT / ".dockerignore").read_text().split()

    assert all((REPO_ROOT / path).exists() for path in copied), copied
    assert not set(copied) & set(ignored)
    _assert_runs_a_real_target(ast.literal_eval(cmd.removeprefix("CMD ")))


@pytest.mark.parametrize("function", HTTP_FUNCTIONS, ids=lambda function: function.target)
def test_each_http_function_gets_the_thread_count_its_target_asks_for(function):
    environment = SERVICES[function.target]["environment"]

    assert environment["THREADS"] == find_target(function.target).server_env(1)["THREADS"]
