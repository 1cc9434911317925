"""python -m bench [BENCH ...]: run every bench/bench_*.py (or those named) and record results.

A bench module has `run()`, which returns its results as `{group.figure: {value, unit,
baseline, ratio, target}}`, and `RESULT_GROUPS`, the groups its names start with: when
the bench fails, its earlier results are dropped from the results file, so that none
passes for this run's. `latest_runs.json`, next to it, says which commit and when each
group's figures were measured, since one bench may be run again alone.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import math
import pkgutil
import subprocess
import sys
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.termination import Terminated, exit_cleanly_on_sigterm

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_FILE = BENCH_DIR / "results" / "latest.json"
RUNS_FILE = BENCH_DIR / "results" / "latest_runs.json"
FIELDS = ("value", "unit", "baseline", "ratio", "target")
PREFIX = "bench_"


def discover(only: list[str]) -> list[str]:
    """Module names `bench_<topic>`, all of them or the topics in `only`."""
    names = sorted(
        m.name for m in pkgutil.iter_modules([str(BENCH_DIR)]) if m.name.startswith(PREFIX)
    )
    if not only:
        return names
    wanted = {name if name.startswith(PREFIX) else PREFIX + name for name in only}
    unknown = wanted - set(names)
    if unknown:
        # Named as the README and `--help` name them, without the module prefix.
        raise SystemExit(
            f"unknown bench {', '.join(sorted(n.removeprefix(PREFIX) for n in unknown))};"
            f" expected one of {', '.join(n.removeprefix(PREFIX) for n in names)}"
        )
    return [name for name in names if name in wanted]


def parse_topics(argv: Sequence[str]) -> list[str]:
    """The benches the command line names (all when none); exits on --help."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=(__doc__ or "").strip().split("\n\n", 1)[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    available = ", ".join(name.removeprefix(PREFIX) for name in discover([]))
    parser.add_argument("topics", nargs="*", metavar="bench", help=f"any of {available}")
    return parser.parse_args(argv).topics


def run_module(name: str) -> dict[str, dict[str, Any]]:
    results = importlib.import_module(f"bench.{name}").run()
    if not isinstance(results, dict):
        raise TypeError(
            f"expected bench.{name}.run() to return a dict, got {type(results).__name__}"
        )
    figures = {key: {field: entry.get(field) for field in FIELDS} for key, entry in results.items()}
    for key, entry in figures.items():
        for field in ("value", "baseline", "ratio"):
            number = entry[field]
            # NaN or infinity is no measurement (a run with no samples), nor valid JSON.
            if isinstance(number, float) and not math.isfinite(number):
                raise ValueError(f"bench.{name}: {key} has {field} {number}: nothing was measured")
    return figures


def merge_results(
    path: Path, results: dict[str, dict[str, Any]], failed_groups: Sequence[str] = ()
) -> dict[str, dict[str, Any]]:
    """Results of benches this run did not measure stay; a bench run again replaces all of its own.

    A result's group is its name up to the first dot, so a figure a bench no longer
    reports does not linger next to its new ones; the groups of a bench that failed
    are dropped, so that its earlier figures do not pass for this run's.
    """
    measured = {name.split(".", 1)[0] for name in results} | set(failed_groups)
    earlier = _read(path)
    merged = {k: v for k, v in earlier.items() if k.split(".", 1)[0] not in measured}
    merged.update(results)
    return _write(path, merged)


def record_runs(
    path: Path, measured_at: dict[str, str], failed_groups: Sequence[str], commit: str | None
) -> dict[str, Any]:
    """Note, for each group this run measured, the commit and when its bench finished;
    a failed group's note goes, as its figures do."""
    runs = {group: run for group, run in _read(path).items() if group not in failed_groups}
    runs.update({group: {"commit": commit, "measured_at": at} for group, at in measured_at.items()})
    return _write(path, runs)


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def _write(path: Path, entries: dict[str, Any]) -> dict[str, Any]:
    """`entries` as JSON sorted by key, so that a diff of two runs lines up."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(sorted(entries.items())), indent=2) + "\n")
    return entries


def result_groups(name: str) -> tuple[str, ...]:
    """The groups bench `name` reports, read from its source, so that a bench whose import
    fails still has its earlier figures dropped."""
    tree = ast.parse((BENCH_DIR / f"{name}.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "RESULT_GROUPS" for target in node.targets
        ):
            return tuple(ast.literal_eval(node.value))
    raise LookupError(f"bench/{name}.py sets no RESULT_GROUPS")


def _commit() -> str | None:
    """HEAD's short hash, with `-dirty` when the tree has changes git tracks."""
    head = _git("rev-parse", "--short", "HEAD")
    if not head:
        return None
    return f"{head}-dirty" if _git("status", "--porcelain", "--untracked-files=no") else head


def _git(*args: str) -> str:
    try:
        done = subprocess.run(
            ["git", *args], cwd=BENCH_DIR, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def format_table(results: dict[str, dict[str, Any]]) -> str:
    header = ("result", "value", "baseline", "ratio", "target")
    rows = [header] + [
        (
            name,
            _number(entry["value"], entry["unit"]),
            _number(entry["baseline"], entry["unit"]),
            "" if entry["ratio"] is None else f"{entry['ratio']:g}x",
            str(entry["target"] or ""),
        )
        for name, entry in sorted(results.items())
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    )


def _number(value: Any, unit: str | None) -> str:
    if value is None:
        return ""
    text = f"{value:,.4g}" if isinstance(value, float) else f"{value:,}"
    return f"{text} {unit or ''}".strip()


def main(argv: list[str]) -> int:
    results: dict[str, dict[str, Any]] = {}
    measured_at: dict[str, str] = {}
    failed = []
    exit_cleanly_on_sigterm()  # also for a bench that starts no servers
    terminated: Terminated | None = None
    for name in discover(parse_topics(argv)):
        print(f"running {name} ...", file=sys.stderr, flush=True)
        try:
            figures = run_module(name)
            results.update(figures)
            finished = datetime.now(UTC).isoformat(timespec="seconds")
            measured_at.update({key.split(".", 1)[0]: finished for key in figures})
        except Terminated as stop:
            # SIGTERM stops the run: what finished is still recorded.
            failed.append(name)
            terminated = stop
            break
        # One broken bench must not hide the others' figures, even one that exits.
        except (Exception, SystemExit):
            traceback.print_exc()
            failed.append(name)
    failed_groups = [group for name in failed for group in result_groups(name)]
    if results or failed_groups:
        merge_results(RESULTS_FILE, results, failed_groups)
        record_runs(RUNS_FILE, measured_at, failed_groups, _commit())
        print(format_table(results))
    if terminated is not None:
        print(f"stopped by SIGTERM during {failed[-1]}", file=sys.stderr)
        return int(terminated.code)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
