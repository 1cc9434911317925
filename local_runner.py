"""Run the whole service in one process: `python local_runner.py --help` for the flags.

The pieces live in shared/runner/; this file only hands over the command line.
"""

import sys

from shared.runner.local import run
from shared.runner.shutdown import exit_with

if __name__ == "__main__":
    exit_with(run(sys.argv[1:]))
