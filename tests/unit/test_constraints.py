"""constraints.txt pins the whole dependency tree, and agrees with the requirements files.

A requirement added or re-pinned without `make lock` fails here, instead of a fresh
install quietly taking whatever its new dependencies' latest releases are.
"""

from __future__ import annotations

import tomllib
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from infra.package import CONSTRAINTS, REPO_ROOT, read_pins

DIRECT = (REPO_ROOT / "requirements.txt", REPO_ROOT / "requirements-dev.txt")


def direct_requirements() -> list[Requirement]:
    """With their extras, which read_pins drops (an extra pulls in packages of its own);
    a requirement whose marker leaves it out here is not installed, so not walked."""
    requirements = [
        Requirement(line)
        for path in DIRECT
        for raw in path.read_text().splitlines()
        if (line := raw.split("#", 1)[0].strip()) and not line.startswith("-")
    ]
    return [r for r in requirements if r.marker is None or r.marker.evaluate({"extra": ""})]


def installed_closure(roots: list[Requirement]) -> dict[str, str]:
    """Every distribution the roots pull in (extras and markers applied), with the
    version installed here, by normalised name."""
    found: dict[str, str] = {}
    todo = [(requirement.name, frozenset(requirement.extras)) for requirement in roots]
    seen = set()
    while todo:
        name, extras = todo.pop()
        if (canonicalize_name(name), extras) in seen:
            continue
        seen.add((canonicalize_name(name), extras))
        distribution = metadata.distribution(name)
        found[canonicalize_name(name)] = distribution.version
        environments = [{"extra": extra} for extra in extras] or [{"extra": ""}]
        for line in distribution.requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or any(
                requirement.marker.evaluate(environment) for environment in environments
            ):
                todo.append((requirement.name, frozenset(requirement.extras)))
    return found


def test_every_direct_pin_matches_the_constraints():
    constraints = read_pins(CONSTRAINTS)
    for path in DIRECT:
        for name, version in read_pins(path).items():
            assert name in constraints, f"{path.name}: {name} is not in constraints.txt"
            assert constraints[name] == version, (
                f"{path.name} pins {name} {version}, constraints.txt {constraints[name]}:"
                " run `make lock`"
            )


def test_every_installed_dependency_is_pinned_at_its_installed_version():
    constraints = read_pins(CONSTRAINTS)
    closure = installed_closure(direct_requirements())
    assert len(closure) > len(direct_requirements())  # the walk got past the direct ones
    unpinned = sorted(set(closure) - set(constraints))
    assert not unpinned, f"installed but not in constraints.txt (run `make lock`): {unpinned}"
    drifted = {name: v for name, v in closure.items() if constraints[name] != v}
    assert not drifted, f"installed at other versions than constraints.txt pins: {drifted}"


def test_setuptools_is_pinned_for_the_builds_and_every_install_hands_the_pins_to_them():
    # psycopg2 and this project are built from source, in isolated environments that
    # only PIP_CONSTRAINT reaches (`-c` does not): without both, a new setuptools
    # release would change a fresh install's builds, or break them.
    constraints = read_pins(CONSTRAINTS)
    build_system = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["build-system"]
    for line in build_system["requires"]:
        requirement = Requirement(line)
        pinned = constraints.get(canonicalize_name(requirement.name))
        assert pinned is not None, f"constraints.txt does not pin {requirement.name}"
        assert requirement.specifier.contains(pinned), f"{requirement} refuses the pinned {pinned}"
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "PIP_PINNED := PIP_CONSTRAINT=$(PINS) PIP_BUILD_CONSTRAINT=$(PINS) " in makefile
    assert "-c constraints.txt" not in makefile
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert (
        "PIP_CONSTRAINT=/app/constraints.txt PIP_BUILD_CONSTRAINT=/app/constraints.txt \\\n"
        "        pip install" in dockerfile
    )
