"""HTTP load on loopback: the maximum rate (wrk) and a fixed-rate, open-loop Python generator.

The maximum rate is closed-loop: a few connections send a request as soon as the
previous answer came. wrk does it (Debian's package, installed on first use when
missing and we are root); without it, the Python generator runs closed-loop instead.

The fixed rate is open-loop, as wrk2 would do: request i is due at start + i / rate,
whatever happened to the earlier ones, and its latency is counted from when it was
due, so a stalled server cannot hide its queue (no coordinated omission). The
schedule is split over a few processes, each an asyncio loop over kept-alive
connections; every run is bounded in requests and in time.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import random
import re
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from infra.debian_tools import ensure_debian_tool

PROCESSES = 2
MAX_CONNECTIONS_PER_PROCESS = 64
DRAIN_TIMEOUT_S = 10.0
START_DELAY_S = 1.0
# How long past its duration a load process may take to report before the run fails:
# a pool worker that died would otherwise leave the bench waiting for ever.
SHARE_GRACE_S = 60.0
# Below gunicorn's keep-alive (2 s): an older idle connection may be closing under us.
IDLE_REUSE_S = 1.0


@dataclass(frozen=True)
class RequestMix:
    """What to send: `method` to `path` (with `{id}` drawn from 1..max_id), or one of `bodies`."""

    method: str
    path: str = "/"
    bodies: Sequence[bytes] = ()
    max_id: int = 0

    def build(self, host: str, rng: random.Random, index: int) -> bytes:
        path = self.path
        if self.max_id:
            path = path.replace("{id}", str(rng.randint(1, self.max_id)))
        body = self.bodies[index % len(self.bodies)] if self.bodies else b""
        head = (
            f"{self.method} {path} HTTP/1.1\r\nHost: {host}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body


@dataclass
class MaxRate:
    rate: float  # responses per second
    requests: int
    errors: int  # non-2xx answers and socket errors
    tool: str


@dataclass
class FixedRate:
    rate: float  # offered
    sent: int
    errors: int
    late_sends: int  # sent more than 5 ms behind the schedule (behind, or out of connections)
    # One per request sent, from when it was due: to its 2xx answer, or to when it failed
    # (another status, a socket error) or was given up unanswered (DRAIN_TIMEOUT_S).
    latencies_ms: list[float] = field(default_factory=list)
    # (due, answered, status, body) of each 2xx answer, wall clock, when bodies are kept
    responses: list[tuple[float, float, int, bytes]] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        return percentile(sorted(self.latencies_ms), q)


def percentile(ordered: Sequence[float], q: float) -> float:
    """The q-th percentile (nearest rank) of values sorted ascending; NaN for none."""
    if not ordered:
        return float("nan")
    # Rounded first: 99.9 / 100 * 1000 is 999.0000000000001 in floats, whose ceiling
    # would be the maximum instead of rank 999.
    return ordered[max(0, math.ceil(round(q / 100 * len(ordered), 9)) - 1)]


def max_rate(url: str, mix: RequestMix, *, duration_s: float, connections: int = 16) -> MaxRate:
    """Closed-loop throughput over `duration_s`, with wrk when it can be had."""
    wrk = ensure_wrk()
    if wrk is not None:
        return _wrk_max_rate(wrk, url, mix, duration_s=duration_s, connections=connections)
    return _python_max_rate(url, mix, duration_s=duration_s, connections=connections)


def max_rate_tool() -> str:
    """What `max_rate` measures with, as a results file names it."""
    return "wrk" if ensure_wrk() is not None else "the Python generator (wrk unavailable)"


def fixed_rate(
    url: str, mix: RequestMix, *, rate: float, duration_s: float, keep_bodies: bool = False
) -> FixedRate:
    """Send `rate` requests per second for `duration_s`, open-loop (see the module docstring)."""
    total = int(rate * duration_s)
    context = multiprocessing.get_context("spawn")
    with context.Pool(PROCESSES) as pool:
        start_at = time.time() + START_DELAY_S
        shares = pool.starmap_async(
            _run_share,
            [
                (url, mix, "open", rate, total, duration_s, start_at, k, keep_bodies)
                for k in range(PROCESSES)
            ],
        ).get(timeout=START_DELAY_S + duration_s + SHARE_GRACE_S)
    result = FixedRate(rate=rate, sent=0, errors=0, late_sends=0)
    for share in shares:
        result.sent += share["sent"]
        result.errors += share["errors"]
        result.late_sends += share["late"]
        result.latencies_ms.extend(share["latencies_ms"])
        result.responses.extend(share["responses"])
    return result


def ensure_wrk() -> str | None:
    """The path of wrk; installed with apt-get when missing and we may, else None."""
    return ensure_debian_tool("wrk", "wrk")


# --- wrk ----------------------------------------------------------------------------


def _wrk_script(mix: RequestMix) -> str:
    """The Lua `request()` that makes wrk send the same mix as the Python generator."""
    bodies = ", ".join(f"[==[{body.decode()}]==]" for body in mix.bodies)
    prefix, _, suffix = mix.path.partition("{id}")
    path = f'"{mix.path}"'
    if mix.max_id:
        path = f'"{prefix}" .. math.random(1, {mix.max_id}) .. "{suffix}"'
    return f"""
local bodies = {{{bodies}}}
local counter = 0
math.randomseed(12345)
request = function()
  counter = counter + 1
  local body = nil
  if #bodies > 0 then body = bodies[(counter % #bodies) + 1] end
  return wrk.format("{mix.method}", {path}, {{["Content-Type"] = "application/json"}}, body)
end
"""


def _wrk_max_rate(
    wrk: str, url: str, mix: RequestMix, *, duration_s: float, connections: int
) -> MaxRate:
    with tempfile.TemporaryDirectory() as directory:
        script_path = Path(directory) / "requests.lua"
        script_path.write_text(_wrk_script(mix))
        command = [
            wrk,
            "-t1",
            f"-c{connections}",
            f"-d{duration_s:.0f}s",
            "-s",
            str(script_path),
            url,
        ]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=duration_s + 30, check=False
        )
    if result.returncode != 0:
        raise RuntimeError(f"wrk failed ({result.returncode}): {result.stderr or result.stdout}")
    return _parse_wrk(result.stdout)


def _parse_wrk(output: str) -> MaxRate:
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in", output)
    if rate is None or total is None:
        raise RuntimeError(f"expected wrk's Requests/sec line, got:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    errors = int(non_2xx.group(1)) if non_2xx else 0
    if sockets:
        errors += sum(int(group) for group in sockets.groups())
    return MaxRate(float(rate.group(1)), int(total.group(1)), errors, "wrk")


# --- the Python generator -----------------------------------------------------------


def _python_max_rate(url: str, mix: RequestMix, *, duration_s: float, connections: int) -> MaxRate:
    context = multiprocessing.get_context("spawn")
    per_process = max(1, connections // PROCESSES)
    with context.Pool(PROCESSES) as pool:
        start_at = time.time() + START_DELAY_S
        shares = pool.starmap_async(
            _run_share,
            [
                (url, mix, "closed", per_process, 0, duration_s, start_at, k, False)
                for k in range(PROCESSES)
            ],
        ).get(timeout=START_DELAY_S + duration_s + SHARE_GRACE_S)
    done = sum(share["sent"] - share["errors"] for share in shares)
    errors = sum(share["errors"] for share in shares)
    return MaxRate(done / duration_s, done + errors, errors, "python closed-loop")


def _run_share(
    url: str,
    mix: RequestMix,
    mode: str,
    rate_or_connections: float,
    total: int,
    duration_s: float,
    start_at: float,
    share: int,
    keep_bodies: bool,
) -> dict:
    """One process's part of a run (runs in a pool process)."""
    parts = urlsplit(url)
    runner = _Share(parts.hostname or "127.0.0.1", parts.port or 80, mix, share, keep_bodies)
    if mode == "open":
        coroutine = runner.open_loop(rate_or_connections, total, start_at)
    else:
        coroutine = runner.closed_loop(int(rate_or_connections), duration_s, start_at)
    asyncio.run(coroutine)
    return {
        "sent": runner.sent,
        "errors": runner.errors,
        "late": runner.late,
        "latencies_ms": runner.latencies_ms,
        "responses": runner.responses,
    }


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

    async def exchange(self, request: bytes) -> tuple[int, bytes, bool]:
        """Send one request, read its answer: (status, body, whether the server keeps it open)."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length, keep = 0, True
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.strip().lower() == "close":
                keep = False
        body = await self.reader.readexactly(length) if length else b""
        return status, body, keep

    def close(self) -> None:
        self.writer.close()


class _Share:
    def __init__(
        self, host: str, port: int, mix: RequestMix, share: int, keep_bodies: bool
    ) -> None:
        self.host, self.port, self.mix, self.share = host, port, mix, share
        self.keep_bodies = keep_bodies
        self.rng = random.Random(1_000 + share)
        self.idle: list[_Connection] = []
        self.open_connections = 0
        self.slot = asyncio.Semaphore(MAX_CONNECTIONS_PER_PROCESS)
        self.sent = self.errors = self.late = 0
        self.latencies_ms: list[float] = []
        self.responses: list[tuple[float, float, int, bytes]] = []

    async def open_loop(self, rate: float, total: int, start_at: float) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time() + (start_at - time.time())
        tasks, dues = [], []
        for index in range(self.share, total, PROCESSES):
            due = start + index / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            request = self.mix.build(self.host, self.rng, index)
            due_wall = start_at + index / rate
            tasks.append(asyncio.create_task(self._timed(request, due, due_wall)))
            dues.append(due)
        _done, pending = await asyncio.wait(tasks, timeout=DRAIN_TIMEOUT_S) if tasks else ((), ())
        given_up_at = loop.time()
        for task, due in zip(tasks, dues, strict=True):
            if task in pending:
                task.cancel()
                # In the percentiles as what it took at least: left out, the slowest
                # requests of all would make the tail look better.
                self._failed(given_up_at, due)
        self._close_all()

    async def closed_loop(self, connections: int, duration_s: float, start_at: float) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, start_at - time.time()))
        end = loop.time() + duration_s

        async def worker(offset: int) -> None:
            index = offset
            while loop.time() < end:
                request = self.mix.build(self.host, self.rng, index)
                await self._timed(request, loop.time(), time.time())
                index += connections

        await asyncio.wait_for(
            asyncio.gather(*(worker(n) for n in range(connections))),
            timeout=duration_s + DRAIN_TIMEOUT_S,
        )
        self._close_all()

    async def _timed(self, request: bytes, due: float, due_wall: float) -> None:
        loop = asyncio.get_running_loop()
        self.sent += 1
        async with self.slot:
            # Late when it actually goes out, past its schedule or waiting for a connection
            # slot: either way the server did not get it at the offered rate.
            if loop.time() - due > 0.005:
                self.late += 1
            try:
                status, body = await self._exchange(request)
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                self._failed(loop.time(), due)
                return
            finished = loop.time()
        if not 200 <= status < 300:
            self._failed(finished, due)
            return
        self.latencies_ms.append((finished - due) * 1000)
        if self.keep_bodies:
            self.responses.append((due_wall, time.time(), status, body))

    def _failed(self, at: float, due: float) -> None:
        """A request that got no 2xx: an error, and in the latencies as what it took."""
        self.errors += 1
        self.latencies_ms.append((at - due) * 1000)

    async def _exchange(self, request: bytes) -> tuple[int, bytes]:
        """On a kept-alive connection if one is idle; again on a new one if the server had
        closed it meanwhile (gunicorn closes idle ones after its keep-alive of 2 s)."""
        loop = asyncio.get_running_loop()
        while self.idle:
            connection = self.idle.pop()
            if loop.time() - connection.idle_since > IDLE_REUSE_S:
                connection.close()
                continue
            try:
                return await self._exchange_on(connection, request)
            except (ConnectionResetError, BrokenPipeError, asyncio.IncompleteReadError) as error:
                if getattr(error, "partial", b""):
                    raise  # the server had started answering: a real error
        return await self._exchange_on(await self._connect(), request)

    async def _exchange_on(self, connection: _Connection, request: bytes) -> tuple[int, bytes]:
        try:
            status, body, keep = await connection.exchange(request)
        except BaseException:
            connection.close()
            raise
        if keep:
            connection.idle_since = asyncio.get_running_loop().time()
            self.idle.append(connection)
        else:
            connection.close()
        return status, body

    async def _connect(self) -> _Connection:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        return _Connection(reader, writer)

    def _close_all(self) -> None:
        for connection in self.idle:
            connection.close()
        self.idle.clear()
