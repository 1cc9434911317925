"""`python -m shared.runner.serve_function`: the image's entry point. FUNCTION_TARGET picks the
function; FUNCTION_SOURCE, when not set, is looked up for it (predict and simple_predict
share functions/predict/main.py), and WORKERS / THREADS default to the function's
`server_env`. Then functions-framework takes over the process."""

from __future__ import annotations

import os
import shutil
import sys

from shared.runner.targets import find_target


def main() -> int:
    target = os.environ.get("FUNCTION_TARGET", "")
    if not target:
        print("FUNCTION_TARGET is not set: expected a function name, e.g. async_predict")
        return 2
    try:
        function = find_target(target)
    except LookupError as error:
        print(error)
        return 2
    os.environ.setdefault("FUNCTION_SOURCE", str(function.source))
    # One worker per CPU, and the function's own thread count, unless the deployment says.
    for name, value in function.server_env(os.cpu_count() or 1).items():
        os.environ.setdefault(name, value)
    executable = shutil.which("functions-framework")
    if executable is None:
        print("functions-framework is not installed (pip install -r requirements.txt)")
        return 2
    # exec: functions-framework becomes PID 1's process and gets SIGTERM directly.
    os.execv(executable, [executable, *sys.argv[1:]])
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
