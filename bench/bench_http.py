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

`simple_predict` reads ads 1..ADS, drawn at random, from PostgreSQL. Its maximum rate is
also measured, in the same turns, without some of its pieces (bench/bare/main.py): the
lookup and the model without the endpoint wrapper, and the lookup alone. Those are not
targets; they show how much of the gap to hello world each piece is.
"""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import backends, loadgen, processes, report, seeding
from bench.figures import ratio, rounded_up

RESULT_GROUPS = ("predict_http", "simple_predict_http")  # see bench/__main__.py

ADS = 10_000
WARM_UP_S = 2
MAX_RATE_S = 4
MAX_RATE_ROUNDS = 5  # hello world alone moved between 1,237 and 1,375 req/s in three
FIXED_RATE_S = 10
RATE_TARGET = 0.7
P99_TARGET_MS = 10.0
MAX_ERROR_SHARE = 0.001
PREDICT_SOURCE = backends.REPO_ROOT / "functions" / "predict" / "main.py"
HELLO_SOURCE = backends.REPO_ROOT / "bench" / "hello" / "main.py"
BARE_SOURCE = backends.REPO_ROOT / "bench" / "bare" / "main.py"
# bench/bare/main.py's functions, and what each leaves out of simple_predict.
BARE_FUNCTIONS = {
    "lookup_and_model": "the endpoint wrapper",
    "lookup_only": "the endpoint wrapper and the model",
}


@dataclass(frozen=True)
class HttpFigures:
    max_rate: float
    rate: float  # the fixed rate of the latency run
    p50_ms: float
    p99_ms: float
    late_sends: int


def run() -> dict[str, dict[str, Any]]:
    stack = backends.stack()
    seeding.reset_tables(stack.database_url)
    seeding.seed_ads(stack.database_url, ADS)
    env = backends.settings_env(backends.bench_settings(stack))
    cases = {
        "predict_http": (
            "predict",
            loadgen.RequestMix("POST", "/", bodies=processes.ad_bodies(500)),
            (),
        ),
        "simple_predict_http": (
            "simple_predict",
            loadgen.RequestMix("POST", "/?item_id={id}", max_id=ADS),
            tuple(BARE_FUNCTIONS),
        ),
    }
    results: dict[str, dict[str, Any]] = {}
    rows = [("function", "max req/s", "at req/s", "p50 ms", "p99 ms", "late sends")]
    for name, (target, mix, bare) in cases.items():
        ours, hello, bare_rates = compare_with_hello(stack, env, target, mix, bare)
        results.update(_entries(name, ours, hello))
        rows += [_row(name, ours), _row(f"  hello world ({name})", hello)]
        for function, rate in bare_rates.items():
            results[f"{name}.{function}_max_rate"] = _bare_entry(function, rate, hello)
            label = f"  {target} without {BARE_FUNCTIONS[function]}"
            rows.append((label, f"{rate:,.0f}", "", "", "", ""))
    report.print_table("predict_http / simple_predict_http (gunicorn, same settings)", rows)
    return results


def compare_with_hello(
    stack: backends.Stack,
    env: dict[str, str],
    target: str,
    mix: loadgen.RequestMix,
    bare_functions: Sequence[str] = (),
) -> tuple[HttpFigures, HttpFigures, dict[str, float]]:
    """The function's figures and hello world's, the latter at the function's fixed rate,
    and the maximum rate of each of `bare_functions` (bench/bare/main.py)."""
    with contextlib.ExitStack() as servers:
        ours_url = servers.enter_context(serve(stack, PREDICT_SOURCE, target, env, mix))
        hello_url = servers.enter_context(
            serve(stack, HELLO_SOURCE, "hello", env, mix, server_as=target)
        )
        # The stripped copies only take part in the maximum rates: stopped before the
        # latency runs, they leave those as they were without them.
        with contextlib.ExitStack() as bare_servers:
            bare_urls = {
                function: bare_servers.enter_context(
                    serve(stack, BARE_SOURCE, function, env, mix, server_as=target)
                )
                for function in bare_functions
            }
            max_rates = alternating_max_rates(
                {"hello world": hello_url, target: ours_url, **bare_urls}, mix
            )
        hello_max, ours_max = max_rates.pop("hello world"), max_rates.pop(target)
        ours = _latency(ours_url, mix, ours_max, rate=ours_max / 2)
        hello = _latency(hello_url, mix, hello_max, rate=ours_max / 2)
    return ours, hello, max_rates


@contextlib.contextmanager
def serve(
    stack: backends.Stack,
    source: Path,
    target: str,
    env: dict[str, str],
    mix: loadgen.RequestMix,
    *,
    server_as: str | None = None,
) -> Iterator[str]:
    """The function on gunicorn, warmed up (model loaded, connections open); yields its URL."""
    with processes.function_server(
        source, target, env, log_dir=stack.run_dir, server_as=server_as
    ) as server:
        path = mix.path.replace("{id}", "1")
        body = mix.bodies[0] if mix.bodies else None
        processes.warm_up(server.url + path, method=mix.method, body=body)
        loadgen.max_rate(server.url, mix, duration_s=WARM_UP_S)
        yield server.url


def alternating_max_rates(urls: dict[str, str], mix: loadgen.RequestMix) -> dict[str, float]:
    """Each server's median over MAX_RATE_ROUNDS turns, taken in order, so that a slow
    spell of the machine hits every side."""
    rates: dict[str, list[float]] = {name: [] for name in urls}
    for _ in range(MAX_RATE_ROUNDS):
        for name, url in urls.items():
            rates[name].append(measure_max_rate(url, mix))
    report.log("max rates, " + "; ".join(f"{name}: {_rounded(r)}" for name, r in rates.items()))
    return {name: statistics.median(rounds) for name, rounds in rates.items()}


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
            "target": f">= {RATE_TARGET} of hello world on the same gunicorn settings,"
            f" load by {loadgen.max_rate_tool()}",
        },
        f"{name}.p50_at_half_max": {
            "value": round(ours.p50_ms, 2),
            "unit": "ms",
            "baseline": round(hello.p50_ms, 2),
            "ratio": ratio(hello.p50_ms, ours.p50_ms),
            "target": f"report only; {at}",
        },
        f"{name}.p99_at_half_max": {
            "value": rounded_up(ours.p99_ms, 2),
            "unit": "ms",
            "baseline": round(hello.p99_ms, 2),
            "ratio": ratio(hello.p99_ms, ours.p99_ms),
            "target": f"< {P99_TARGET_MS:g} ms {at}",
        },
    }


def _bare_entry(function: str, rate: float, hello: HttpFigures) -> dict[str, Any]:
    return {
        "value": round(rate),
        "unit": "req/s",
        "baseline": round(hello.max_rate),
        "ratio": ratio(rate, hello.max_rate),
        "target": f"report only; simple_predict without {BARE_FUNCTIONS[function]}"
        " (bench/bare/main.py), in the same turns",
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
