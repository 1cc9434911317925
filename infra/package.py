"""`python -m infra.package --out dist/functions` (what `make package` does): one deployable
folder per function, e.g. dist/functions/async_predict/ with

    main.py            the function's own file, as it is in functions/<name>/
    shared/            the shared package it imports
    requirements.txt   functions/<name>/requirements.txt: only what it needs, pinned,
                       plus `-c constraints.txt`
    constraints.txt    the root one: every transitive dependency at the version tested

which is what `gcloud functions deploy --source dist/functions/<name>` (or any
functions-framework host) expects. Each pin is checked against the root
requirements.txt, so a bundle never ships a version the service was not tested with.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from shared.runner.targets import ALL_FUNCTIONS

REPO_ROOT = Path(__file__).resolve().parents[1]
FUNCTIONS_DIR = REPO_ROOT / "functions"
SHARED_DIR = REPO_ROOT / "shared"
ROOT_REQUIREMENTS = REPO_ROOT / "requirements.txt"
CONSTRAINTS = REPO_ROOT / "constraints.txt"
# pip reads a `-c` line inside a requirements file, so a platform that only runs
# `pip install -r requirements.txt` installs the tested tree all the same.
_USE_CONSTRAINTS = "\n# What the pins above pull in, at the versions tested.\n-c constraints.txt\n"
_PIN = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?P<extras>\[[^\]]*\])?==(?P<version>\S+)$"
)


class PackagingError(RuntimeError):
    """A bundle cannot be built as asked (a missing file, an unpinned or drifted requirement)."""


def function_names(functions_dir: Path = FUNCTIONS_DIR) -> list[str]:
    """Every folder of functions/ with a main.py: one bundle each."""
    return sorted(path.parent.name for path in functions_dir.glob("*/main.py"))


def read_pins(path: Path) -> dict[str, str]:
    """`name==version` lines as {normalised name: version}; anything unpinned is an error."""
    pins = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        match = _PIN.match(line)
        if match is None:
            raise PackagingError(f"{path.name}:{number}: expected `name==version`, found {line!r}")
        pins[_normalise(match["name"])] = match["version"]
    return pins


def check_pins(requirements: Path, root_requirements: Path = ROOT_REQUIREMENTS) -> None:
    """Each pin of `requirements` must be in the root requirements, at the same version."""
    root = read_pins(root_requirements)
    for package, version in read_pins(requirements).items():
        if package not in root:
            raise PackagingError(
                f"{requirements} pins {package}, which the root requirements.txt does not: "
                "add it there first"
            )
        if root[package] != version:
            raise PackagingError(
                f"{requirements} pins {package}=={version}, "
                f"the root requirements.txt {package}=={root[package]}"
            )


# Never bundled: caches, and anything hidden (a `.env` holding a DATABASE_URL, say), which
# the working tree may hold beside the code, untracked.
_NOT_BUNDLED = shutil.ignore_patterns("__pycache__", "*.pyc", ".*", "*.egg-info")


def build_bundle(name: str, out_dir: Path, shared_dir: Path = SHARED_DIR) -> Path:
    """Build (or rebuild from scratch) the bundle of functions/<name> under out_dir."""
    source = FUNCTIONS_DIR / name / "main.py"
    if not source.exists():
        raise PackagingError(f"no function {name!r}: expected {source.relative_to(REPO_ROOT)}")
    requirements = FUNCTIONS_DIR / name / "requirements.txt"
    if not requirements.exists():
        raise PackagingError(f"functions/{name}/ has no requirements.txt")
    check_pins(requirements)
    bundle = out_dir / name
    shutil.rmtree(bundle, ignore_errors=True)
    bundle.mkdir(parents=True)
    shutil.copy2(source, bundle / "main.py")
    (bundle / "requirements.txt").write_text(requirements.read_text() + _USE_CONSTRAINTS)
    shutil.copy2(CONSTRAINTS, bundle / "constraints.txt")
    shutil.copytree(shared_dir, bundle / "shared", ignore=_NOT_BUNDLED)
    return bundle


def server_settings(name: str) -> str:
    """The THREADS each target of bundle `name` wants: the image's entry point sets them,
    and a bundle has no entry point of its own, so its deployer must."""
    return ", ".join(
        f"{function.target}: THREADS={function.threads}"
        for function in ALL_FUNCTIONS
        if function.folder == name
    )


def remove_stale_bundles(out_dir: Path, names: Sequence[str]) -> list[Path]:
    """Remove the bundles under out_dir of functions no longer among `names` (renamed or
    removed), which could otherwise still be deployed; returns them. Anything else
    there is left alone."""
    if not out_dir.is_dir():
        return []
    stale = [
        child
        for child in sorted(out_dir.iterdir())
        if child.name not in names and (child / "main.py").is_file() and (child / "shared").is_dir()
    ]
    for bundle in stale:
        shutil.rmtree(bundle)
    return stale


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.package",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,  # keep the docstring's table
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO_ROOT / "dist" / "functions",
        help="where the bundles go, one folder each (default: dist/functions)",
    )
    parser.add_argument("names", nargs="*", help="functions to bundle (default: all)")
    args = parser.parse_args(argv)
    try:
        if not args.names:
            for bundle in remove_stale_bundles(args.out.resolve(), function_names()):
                print(f"removed {bundle}, a bundle of no function now")
        for name in args.names or function_names():
            bundle = build_bundle(name, args.out.resolve())
            print(f"built {bundle} (deploy with {server_settings(name)})")
    except PackagingError as error:
        print(f"package: {error}", file=sys.stderr)
        return 1
    return 0


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


if __name__ == "__main__":
    sys.exit(main())
