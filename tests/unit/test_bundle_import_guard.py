"""The import guard of the packaged-functions test refuses what a bundle does not list."""

from __future__ import annotations

import subprocess

from tests.e2e.bundle_imports import write_import_guard
from tests.python_snippets import run_python


def _imports(guard_dir, module: str) -> subprocess.CompletedProcess[str]:
    return run_python(f"import {module}", env={"PYTHONPATH": str(guard_dir)})


def test_the_guard_refuses_a_package_the_bundle_does_not_list_and_allows_one_it_does(tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("pydantic==2.14.4\n-c constraints.txt\n")

    refused = write_import_guard(requirements, tmp_path / "guard")

    assert {"tenacity", "confluent_kafka", "sklearn", "joblib", "pytest"} <= refused
    assert "pydantic" not in refused and "pydantic_core" not in refused
    unlisted = _imports(tmp_path / "guard", "tenacity.retry")
    assert unlisted.returncode != 0
    assert "not in this bundle's requirements.txt" in unlisted.stderr
    assert _imports(tmp_path / "guard", "pydantic").returncode == 0
