"""`predict` and `simple_predict` on functions-framework's production server, against hello world.

Every function runs as `functions-framework --source ... --target ...` without
--debug, which is gunicorn, with the WORKERS and THREADS the image gives it
(`FunctionTarget.server_env`, for one CPU: one worker; 2 threads for predict, 4 for
simple_predict), and the hello-world baseline (bench/hello/main.py) runs on exactly
the same settings and gets exactly the same requests. Load comes from other processes on loopback:

- maximum rate: wrk, closed-loop, 16 connections, MAX_RATE_ROUNDS turns of hello world
  and the function alternately, each side's median compared;
- latency: an open-loop run at half the function's maximum rate (bench/loadgen.py),
  p50 and p99 counted from when each request was due; hello world is run at the
  same rate for comparison.

`simple_predict` reads ads 1..ADS, drawn at random, from PostgreSQL.
"""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import _infra, loadgen
from bench.figures import ratio

RESULT_GROUPS = ("predict_http", "simple_predict_http")  # see bench/__main__.py

ADS = 10_000
WARM_UP_S = 2
MAX_RATE_S = 4
MAX_RATE_ROUNDS = 5  # hello world alone moved between 1,237 and 1,375 req/s in three
FIXED_RATE_S = 10
RATE_TARGET = 0.7
P99_TARGET_MS = 10.0
MAX_ERROR_SHARE = 0.001
PREDICT_SOURCE = _infra.REPO_ROOT / "functions" / "predict" / "main.py"
HELLO_SOURCE = _infra.REPO_ROOT / "bench" / "hello" / "main.py"


@dataclass(frozen=True)
class HttpFigures:
    max_rate: float
    rate: float  # the fixed rate of the latency run
    p50_ms: float
    p99_ms: float
    late_sends: int


def run() -> dict[str, dict[str, Any]]:
    stack = _infra.stack()
    _infra.reset_tables(stack.database_url)
    _infra.seed_ads(stack.database_url, ADS)
    env = _infra.settings_env(_infra.bench_settings(stack))
    cases = {
        "predict_http": ("predict", loadgen.RequestMix("POST", "/", bodies=_infra.ad_bodies(500))),
        "simple_predict_http": (
            "simple_predict",
            loadgen.RequestMix("POST", "/?item_id={id}", max_id=ADS),
        ),
    }
    results: dict[str, dict[str, Any]] = {}
    rows = [("function", "max req/s", "at req/s", "p50 ms", "p99 ms", "late sends")]
    for name, (target, mix) in cases.items():
        ours, hello = compare_with_hello(stack, env, target, mix)
        results.update(_entries(name, ours, hello))
        rows += [_row(name, ours), _row(f"  hello world ({name})", hello)]
    _infra.print_table("predict_http / simple_predict_http (gunicorn, same settings)", rows)
    return results


def compare_with_hello(
    stack: _infra.Stack, env: dict[str, str], target: str, mix: loadgen.RequestMix
) -> tuple[HttpFigures, HttpFigures]:
    """The function's figures and hello world's, the latter at the function's fixed rate."""
    with (
        serve(stack, PREDICT_SOURCE, target, env, mix) as ours_url,
        serve(stack, HELLO_SOURCE, "hello", env, mix, server_as=target) as hello_url,
    ):
        hello_max, ours_max = alternating_max_rates(hello_url, ours_url, mix)
        ours = _latency(ours_url, mix, ours_max, rate=ours_max / 2)
        hello = _latency(hello_url, mix, hello_max, rate=ours_max / 2)
    return ours, hello


@contextlib.contextmanager
def serve(
    stack: _infra.Stack,
    source: Path,
    target: str,
    env: dict[str, str],
    mix: loadgen.RequestMix,
    *,
    server_as: str | None = None,
) -> Iterator[str]:
    """The function on gunicorn, warmed up (model loaded, connections open); yields its URL."""
    with _infra.function_server(
        source, target, env, log_dir=stack.run_dir, server_as=server_as
    ) as server:
        path = mix.path.replace("{id}", "1")
        body = mix.bodies[0] if mix.bodies else None
        _infra.warm_up(server.url + path, method=mix.method, body=body)
        loadgen.max_rate(server.url, mix, duration_s=WARM_UP_S)
        yield server.url


def alternating_max_rates(
    hello_url: str, ours_url: str, mix: loadgen.RequestMix
) -> tuple[float, float]:
    """Each side's median over MAX_RATE_ROUNDS turns, so a slow spell hits both sides."""
    hello: list[float] = []
    ours: list[float] = []
    for _ in range(MAX_RATE_ROUNDS):
        hello.append(measure_max_rate(hello_url, mix))
        ours.append(measure_max_rate(ours_url, mix))
    _infra.log(f"max rates, hello world: {_rounded(hello)}; ours: {_rounded(ours)}")
    return statistics.median(hello), statistics.median(ours)


def _rounded(rates: list[float]) -> str:
    return ", ".join(f"{rate:,.0f}" for rate in rates)


def measure_max_rate(url: str, mix: loadgen.RequestMix, *, duration_s: float = MAX_RATE_S) -> float:
    result = loadgen.max_rate(url, mix, duration_s=duration_s)
    if result.errors > MAX_ERROR_SHARE * result.requests:
        raise RuntimeError(
            f"{url}: {result.errors} of {result.requests} requests failed at the maximum rate"
        )
    return result.rate


def _latency(url: str, mix: loadgen.RequestMix, max_rate: float, *, rate: float) -> HttpFigures:
    run = loadgen.fixed_rate(url, mix, rate=rate, duration_s=FIXED_RATE_S)
    if run.errors > MAX_ERROR_SHARE * run.sent:
        raise RuntimeError(f"{url}: {run.errors} of {run.sent} requests failed at {rate:.0f}/s")
    return HttpFigures(max_rate, rate, run.percentile(50), run.percentile(99), run.late_sends)


def _entries(name: str, ours: HttpFigures, hello: HttpFigures) -> dict[str, dict[str, Any]]:
    at = f"at {ours.rate:.0f} req/s (half our max), hello world at the same rate as baseline"
    return {
        f"{name}.max_rate": {
            "value": round(ours.max_rate),
            "unit": "req/s",
            "baseline": round(hello.max_rate),
            "ratio": ratio(ours.max_rate, hello.max_rate),
            "target": f">= {RATE_TARGET} of hello world on the same gunicorn settings",
        },
        f"{name}.p50_at_half_max": {
            "value": round(ours.p50_ms, 2),
            "unit": "ms",
            "baseline": round(hello.p50_ms, 2),
            "ratio": ratio(hello.p50_ms, ours.p50_ms),
            "target": f"report only; {at}",
        },
        f"{name}.p99_at_half_max": {
            "value": round(ours.p99_ms, 2),
            "unit": "ms",
            "baseline": round(hello.p99_ms, 2),
            "ratio": ratio(hello.p99_ms, ours.p99_ms),
            "target": f"<= {P99_TARGET_MS:g} ms {at}",
        },
    }


def _row(name: str, figures: HttpFigures) -> tuple[str, ...]:
    return (
        name,
        f"{figures.max_rate:,.0f}",
        f"{figures.rate:,.0f}",
        f"{figures.p50_ms:.2f}",
        f"{figures.p99_ms:.2f}",
        str(figures.late_sends),
    )
