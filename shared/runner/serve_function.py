"""`python -m shared.runner.serve_function`: the image's entry point. FUNCTION_TARGET picks the
function; FUNCTION_SOURCE, when not set, is looked up for it (predict and simple_predict
share functions/predict/main.py), and WORKERS / THREADS default to the function's
`server_env`. Then functions-framework takes over the process."""

from __future__ import annotations

import math
import os
import shutil
import sys
from pathlib import Path

from shared.runner.targets import find_target

# cgroup v2's CPU limit of this process: "<quota> <period>", or "max <period>" for none.
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def available_cpus(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """The CPUs this process may use: its container's CPU limit when it has one, which
    os.cpu_count() ignores (a 1-CPU container on a 32-core node would start 32 workers,
    each with its model and connection pool), else the CPUs it may run on."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    count = usable or os.cpu_count() or 1
    try:
        quota, period = cpu_max.read_text().split()
        if quota == "max":
            return count
        return max(1, min(count, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        return count


def main() -> int:
    target = os.environ.get("FUNCTION_TARGET", "")
    if not target and {"-h", "--help"} & set(sys.argv[1:]):
        print(__doc__)
        print("Other arguments go to functions-framework; with FUNCTION_TARGET set, --help")
        print("is functions-framework's own.")
        return 0
    if not target:
        print(
            "FUNCTION_TARGET is not set: expected a function name, e.g. async_predict",
            file=sys.stderr,
        )
        return 2
    try:
        function = find_target(target)
    except LookupError as error:
        print(error, file=sys.stderr)
        return 2
    os.environ.setdefault("FUNCTION_SOURCE", str(function.source))
    # One worker per CPU, and the function's own thread count, unless the deployment says.
    for name, value in function.server_env(available_cpus()).items():
        os.environ.setdefault(name, value)
    executable = shutil.which("functions-framework")
    if executable is None:
        print(
            "functions-framework is not installed (pip install -r requirements.txt)",
            file=sys.stderr,
        )
        return 2
    # exec: functions-framework becomes PID 1's process and gets SIGTERM directly.
    os.execv(executable, [executable, *sys.argv[1:]])
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
