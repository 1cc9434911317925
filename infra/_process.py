"""Server processes, TCP ports and lock files: spawn, find, stop; shared by the Kafka and
PostgreSQL servers and the tests' child processes."""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

LOCALHOST = "127.0.0.1"


@dataclass(frozen=True)
class RunAs:
    """An unprivileged account to run a server as (PostgreSQL refuses to run as root)."""

    name: str
    uid: int
    gid: int


# Ports are picked below the range the kernel hands out itself (for bind to port 0 and
# for every outgoing connection): a port picked for a server that starts a moment later
# cannot meanwhile be given to someone else. From the ephemeral range, a runner's
# in-memory Kafka once took the very port its HTTP server had been told to use.
_LOWEST_PICKED_PORT = 10_000
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def free_port(host: str = LOCALHOST) -> int:
    """A port nobody listens on right now, outside the kernel's ephemeral range where
    there is room below it; the kernel's pick otherwise."""
    for port in _picked_ports():
        if port_is_free(port, host):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _picked_ports() -> Iterator[int]:
    """Candidates in turn from a random start, so that this process does not pick one
    port twice in a row, nor two processes the same ones."""
    first_ephemeral = _first_ephemeral_port()
    if first_ephemeral - _LOWEST_PICKED_PORT < 1_000:
        return
    global _next_pick
    span = first_ephemeral - _LOWEST_PICKED_PORT
    for _ in range(100):
        with _pick_lock:  # threads of one test session pick ports too
            if _next_pick is None:
                _next_pick = random.randrange(span)
            _next_pick = (_next_pick + 1) % span
            port = _LOWEST_PICKED_PORT + _next_pick
        yield port


_next_pick: int | None = None
_pick_lock = threading.Lock()


def _first_ephemeral_port() -> int:
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def port_is_free(port: int, host: str = LOCALHOST) -> bool:
    """True if a server could listen on `port` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As Kafka and PostgreSQL do: connections of an exited server lingering in
        # TIME_WAIT do not keep its successor from listening on the same port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def port_accepts(port: int, host: str = LOCALHOST, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def spawn(
    command: Sequence[str],
    *,
    log_path: Path,
    cwd: Path,
    env: dict[str, str] | None = None,
    run_as: RunAs | None = None,
) -> subprocess.Popen[bytes]:
    """Start a server in its own session, its output appended to `log_path`.

    Its own session (and so process group) means a Ctrl-C in the terminal reaches
    only the caller, which then stops the server in order, and that `stop_process`
    can kill every process the server forked; it also lets `python -m infra up`
    exit while the server keeps running.
    """
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            list(command),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=run_as.uid if run_as else None,
            group=run_as.gid if run_as else None,
            extra_groups=[] if run_as else None,
        )


# Run by the child's own interpreter, then replaced by the command (exec keeps the
# setting): prctl(2)'s PR_SET_PDEATHSIG, the signal a process gets when the thread that
# forked it ends. Not a Popen preexec_fn, which may deadlock a child forked from a
# process with threads (librdkafka's, a pool's), as every test process has.
_EXEC_DYING_WITH_PARENT = """
import ctypes, os, sys
sig, parent, command = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
if ctypes.CDLL(None, use_errno=True).prctl(1, sig, 0, 0, 0) != 0:
    raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
if os.getppid() != parent:  # the parent died before prctl: no signal would come
    os.kill(os.getpid(), sig)
os.execvp(command[0], command)
"""


def dying_with_parent(command: Sequence[str], sig: signal.Signals) -> list[str]:
    """`command`, to be run so that the kernel sends it `sig` when this process's current
    thread ends (as it is, off Linux, where there is no such thing).

    For children of use only to the process that started them, such as a test's consumer:
    a parent killed by SIGKILL runs no clean-up, and a child in a session of its own does
    not get the SIGTERM that a CI timeout sends to the parent's process group. The signal
    comes when the forking *thread* ends, so start such children from the main thread.
    """
    if sys.platform != "linux":
        return list(command)
    return [
        sys.executable,
        "-c",
        _EXEC_DYING_WITH_PARENT,
        str(int(sig)),
        str(os.getpid()),
        *command,
    ]


def run_to_completion(
    command: Sequence[str],
    *,
    what: str,
    timeout_s: float,
    cwd: Path,
    run_as: RunAs | None = None,
    env: dict[str, str] | None = None,
) -> str:
    """Run a one-shot tool and return its output; fail with that output if it fails.

    In a session of its own, so a Ctrl-C in the terminal reaches the caller alone, which
    decides: the runner lets initdb finish (cut short, it leaves a data directory no
    later start can use), and any other caller interrupted kills the tool on its way out
    (subprocess.run does)."""
    try:
        result = subprocess.run(
            list(command),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            start_new_session=True,
            user=run_as.uid if run_as else None,
            group=run_as.gid if run_as else None,
            extra_groups=[] if run_as else None,
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"{what} did not finish within {timeout_s:.0f} s") from exc
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed with exit code {result.returncode}:\n{output}")
    return output


def is_alive(pid: int, marker: str) -> bool:
    """True if `pid` runs and its command line contains `marker`.

    The marker (a data directory) guards against a recycled pid: a pid file left
    by a server that died long ago may now name an unrelated process.
    """
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z" and marker in cmdline


def stop_process(
    pid: int,
    *,
    marker: str,
    stop_signal: signal.Signals,
    timeout_s: float,
    child: subprocess.Popen[bytes] | None = None,
) -> bool:
    """Ask a server to stop, kill its process group if it has not stopped by the deadline.

    Returns False if it had to be killed.
    """
    stopped_in_time = True
    if _running(pid, marker, child):
        _signal(pid, stop_signal)
        stopped_in_time = _wait_gone(pid, marker, child, timeout_s)
        if not stopped_in_time:
            _signal_group(pid, signal.SIGKILL)
            _wait_gone(pid, marker, child, 5.0)
        # Forked helpers (PostgreSQL backends) normally exit with their parent; a
        # straggler would keep the port, so the group is killed either way.
        _signal_group(pid, signal.SIGKILL)
    if child is not None:
        _reap(child)
    return stopped_in_time


def kill_process(pid: int, *, marker: str, child: subprocess.Popen[bytes] | None = None) -> None:
    """Kill a server and everything it forked at once, like a crash would."""
    if _running(pid, marker, child):
        _signal_group(pid, signal.SIGKILL)
        _wait_gone(pid, marker, child, 5.0)
    if child is not None:
        _reap(child)


def wait_for_port_release(port: int, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not port_is_free(port):
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"port {port} is still taken {timeout_s:.0f} s after its server exited"
            )
        time.sleep(0.05)


@contextlib.contextmanager
def exclusive_lock(lock_path: Path, timeout_s: float) -> Iterator[None]:
    """Hold an flock on `lock_path`, waiting up to `timeout_s` for another process to let go.

    The kernel releases it when its holder dies, so a killed holder leaves nothing stale."""
    with open(lock_path, "w") as lock:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{lock_path} stayed locked for {timeout_s:.0f} s") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log, or a note that it does not exist."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"({path} does not exist)"
    return "\n".join(text.splitlines()[-lines:])


def _running(pid: int, marker: str, child: subprocess.Popen[bytes] | None) -> bool:
    # A child of ours is asked directly: between fork and exec its command line
    # is still Python's, so the marker would not be found yet.
    if child is not None:
        return child.poll() is None
    return is_alive(pid, marker)


def _signal(pid: int, sig: signal.Signals) -> None:
    # Already gone is what we wanted.
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    # spawn() made the server a session and group leader, so its pgid is its pid;
    # no such group means every member has exited already.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _wait_gone(
    pid: int, marker: str, child: subprocess.Popen[bytes] | None, timeout_s: float
) -> bool:
    if child is not None:
        try:
            child.wait(timeout=timeout_s)
            return True
        except subprocess.TimeoutExpired:
            return False
    deadline = time.monotonic() + timeout_s
    while is_alive(pid, marker):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _reap(child: subprocess.Popen[bytes]) -> None:
    try:
        child.wait(timeout=5.0)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait(timeout=5.0)
