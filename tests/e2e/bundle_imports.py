"""An import guard that holds a bundle to its own requirements.txt.

The tests serve each bundle from the repository's environment, which has every package
the service uses. A bundle whose requirements.txt forgot one would pass there and fail on
its platform. The guard, a `sitecustomize` module put on the bundle process's path,
refuses to import what only packages outside the bundle's requirements, and outside what
those depend on, provide: the project's other dependencies, and its test and dev tools.
"""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

from packaging.requirements import Requirement

from infra.package import read_pins

# What a platform's Python has before any requirement (pip and its build tools, whose
# `_distutils_hack` every interpreter imports at start), and the project itself, whose
# `shared/` each bundle carries as files.
_EVERY_ENVIRONMENT_HAS = {"pip", "setuptools", "wheel", "ad-moderation"}

_GUARD = """\
import sys

REFUSED = {refused!r}


class _RefuseOutsideTheBundle:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in REFUSED:
            raise ModuleNotFoundError(
                f"{{name}} comes from a package not in this bundle's requirements.txt",
                name=name,
            )
        return None


sys.meta_path.insert(0, _RefuseOutsideTheBundle())
"""


def write_import_guard(bundle_requirements: Path, into: Path) -> set[str]:
    """Write `into`/sitecustomize.py; return the top-level modules it refuses."""
    refused = modules_outside(bundle_requirements)
    into.mkdir(parents=True, exist_ok=True)
    (into / "sitecustomize.py").write_text(_GUARD.format(refused=sorted(refused)))
    return refused


def modules_outside(bundle_requirements: Path) -> set[str]:
    """Top-level modules that only distributions installed here provide which neither the
    bundle's requirements nor anything they depend on bring in."""
    installed = {_normalise(d.metadata["Name"]) for d in importlib.metadata.distributions()}
    bundled = _installed_closure(read_pins(bundle_requirements))
    outside = installed - bundled - _EVERY_ENVIRONMENT_HAS
    return {
        module
        for module, distributions in importlib.metadata.packages_distributions().items()
        if {_normalise(d) for d in distributions} <= outside
    }


def _installed_closure(names: set[str] | dict[str, str]) -> set[str]:
    """`names` and every distribution they require, as installed here (extras left out)."""
    seen: set[str] = set()
    to_visit = [_normalise(name) for name in names]
    while to_visit:
        name = to_visit.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.distribution(name).requires or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for line in requires:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                to_visit.append(_normalise(requirement.name))
    return seen


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()
