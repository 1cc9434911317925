"""A test's child process started to die with its parent does not outlive a killed pytest."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

from infra._process import is_alive
from tests.waiting import read_first_line_within, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]

# Stands in for pytest: starts a child the way the fault tests start a consumer (its
# own session), prints the child's pid, and waits to be killed.
_PARENT = """
import signal, subprocess, sys
from infra._process import dying_with_parent
child = subprocess.Popen(
    dying_with_parent(
        [sys.executable, "-c", "import time; time.sleep(60)", sys.argv[1]], signal.SIGKILL
    ),
    start_new_session=True,
)
print(child.pid, flush=True)
signal.pause()
"""


def test_a_child_in_its_own_session_ends_when_its_parent_is_sigkilled():
    marker = f"orphan-{uuid.uuid4().hex}"  # in the child's command line, against pid reuse
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT, marker], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
    )
    child_pid = None
    try:
        child_pid = int(
            read_first_line_within(
                parent.stdout, timeout_s=10, what="the parent to print its child's pid"
            )
        )
        # Waited for, not asserted at once: the child execs a second time (out of the
        # shim that asks for the signal), and while the kernel swaps its memory over its
        # command line reads as empty. Waited for past that second exec, so that the
        # check below cannot take that empty instant for the child's end.
        wait_until(
            lambda: _runs_its_command(child_pid, marker),
            timeout_s=10,
            what=f"the child {child_pid} to run its own command",
        )

        parent.kill()
        parent.wait(timeout=5)

        wait_until(
            lambda: not is_alive(child_pid, marker),
            timeout_s=10,
            what=f"the child {child_pid} to end with its SIGKILLed parent",
        )
    finally:
        parent.kill()
        parent.wait(timeout=5)
        if child_pid is not None and is_alive(child_pid, marker):
            os.kill(child_pid, signal.SIGKILL)


def _runs_its_command(pid: int, marker: str) -> bool:
    """`pid` runs the command given (its marker in the command line), out of the shim."""
    try:
        command_line = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
    return is_alive(pid, marker) and b"prctl" not in command_line
