"""Cost growth: consumer throughput and simple_predict_http with 10k and then 1M rows.

Both `ads` and `moderation_results` hold SIZES rows in turn (bulk-loaded with
generate_series; the tasks table is moderation history plus the tasks being
drained). At each size the consumer (the real poll loop, batch handler and
model) drains the same DRAIN_TASKS tasks, REPEATS times, median kept, and
simple_predict's maximum rate is measured on gunicorn with ads drawn from the
whole table. The figure is the 1M rate as a share of the 10k rate.
"""

from __future__ import annotations

import statistics
from typing import Any

from bench import _infra, loadgen
from bench.bench_consumer_throughput import drain_ours, drain_tasks
from bench.bench_http import PREDICT_SOURCE, measure_max_rate, serve

SIZES = (10_000, 1_000_000)
DRAIN_TASKS = 10_000
REPEATS = 3
MAX_RATE_S = 10  # one run per size: the tables are not rebuilt between turns
KEPT_SHARE = 0.8


def run() -> dict[str, dict[str, Any]]:
    stack = _infra.stack()
    _infra.reset_tables(stack.database_url)
    consumer: dict[int, float] = {}
    http: dict[int, float] = {}
    for size in SIZES:
        _grow_tables(stack.database_url, size)
        consumer[size] = _consumer_rate(stack, size)
        http[size] = _simple_predict_rate(stack, size)
    small, large = SIZES
    _infra.print_table(
        "cost_growth",
        [("rows in ads and moderation_results", "consumer rows/s", "simple_predict req/s")]
        + [(f"{size:,}", f"{consumer[size]:,.0f}", f"{http[size]:,.0f}") for size in SIZES],
    )
    target = f">= {KEPT_SHARE} of the rate at {small:,} rows (a drop of at most 20%)"
    return {
        "cost_growth.consumer_throughput": {
            "value": round(consumer[large]),
            "unit": "rows/s",
            "baseline": round(consumer[small]),
            "ratio": round(consumer[large] / consumer[small], 2),
            "target": f"{target}; {DRAIN_TASKS:,} tasks drained at {large:,} rows",
        },
        "cost_growth.simple_predict_http": {
            "value": round(http[large]),
            "unit": "req/s",
            "baseline": round(http[small]),
            "ratio": round(http[large] / http[small], 2),
            "target": f"{target}; max rate at {large:,} rows",
        },
    }


def _grow_tables(database_url: str, size: int) -> None:
    """`size` ads, and `size - DRAIN_TASKS` finished tasks of history (the drains add the rest)."""
    _infra.log(f"loading {size:,} rows into ads and moderation_results")
    _infra.seed_ads(database_url, size)
    with _infra.connect(database_url) as conn:
        history = conn.execute("SELECT count(*) FROM moderation_results").fetchone()[0]
    if size - DRAIN_TASKS > history:
        _infra.seed_completed_tasks(database_url, size - DRAIN_TASKS - history, ads=size)


def _consumer_rate(stack: _infra.Stack, size: int) -> float:
    rates = []
    for _ in range(REPEATS):
        pending = _infra.seed_pending_tasks(stack.database_url, DRAIN_TASKS, size)
        rates.append(drain_tasks(stack, pending, drain_ours).rate)
        _infra.delete_tasks(stack.database_url, [task_id for task_id, _ in pending])
        _infra.vacuum(stack.database_url, "moderation_results")
    return statistics.median(rates)


def _simple_predict_rate(stack: _infra.Stack, size: int) -> float:
    env = _infra.settings_env(_infra.bench_settings(stack))
    mix = loadgen.RequestMix("POST", "/?item_id={id}", max_id=size)
    with serve(stack, PREDICT_SOURCE, "simple_predict", env, mix) as url:
        return measure_max_rate(url, mix, duration_s=MAX_RATE_S)
