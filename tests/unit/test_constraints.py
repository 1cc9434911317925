"""constraints.txt pins the whole dependency tree, and agrees with the requirements files.

A requirement added or re-pinned without `make lock` fails here, instead of a fresh
install quietly taking whatever its new dependencies' latest releases are.
"""

from __future__ import annotations

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
