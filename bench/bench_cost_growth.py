"""Cost growth: consumer throughput and simple_predict_http with 10k and with 1M rows.

`ads` and `moderation_results` hold 10k rows in one database and 1M in a second one on
the same server (bulk-loaded with generate_series; the tasks table is moderation
history plus the tasks being drained, which are deleted after each drain: at 10k rows
it holds the drained tasks alone, and none while simple_predict, which reads `ads`
alone, is measured), so the two sizes can take turns, each side's
median compared, as in the other benches: CONSUMER_ROUNDS turns for the consumer, whose
drains of 10k tasks last ~0.2 s each, and HTTP_ROUNDS for simple_predict. One size
after the other, a slow spell of the machine during either side moved the figure
between 0.63 and 1.02.

- consumer: the real poll loop, batch handler and model drain the same number of
  fresh tasks (DRAIN_TASKS) at each size.
- simple_predict: one gunicorn server per database, both up at once, each side's
  maximum rate with ads drawn from its whole table.

The figure is the 1M rate as a share of the 10k rate.
"""

from __future__ import annotations

import contextlib
import statistics
from typing import Any

from bench import backends, loadgen, report, seeding
from bench.bench_consumer_throughput import drain_ours, drain_tasks
from bench.bench_http import MAX_RATE_S, PREDICT_SOURCE, measure_max_rate, serve
from bench.figures import ratio

RESULT_GROUPS = ("cost_growth",)  # see bench/__main__.py

SIZES = (10_000, 1_000_000)
DRAIN_TASKS = 10_000
# Five turns left the consumer's figure at the mercy of one slow spell (0.73 and 0.83 in
# two runs the same day, each side's rounds spread by a quarter); a turn costs ~2.5 s.
CONSUMER_ROUNDS = 9
HTTP_ROUNDS = 5
KEPT_SHARE = 0.8


def run() -> dict[str, dict[str, Any]]:
    small, large = SIZES
    main = backends.stack()
    seeding.reset_tables(main.database_url)
    with backends.second_database(main) as other:
        stacks = {small: main, large: other}
        for size, stack in stacks.items():
            _grow_tables(stack.database_url, size)
        consumer = _consumer_rates(stacks)
        http = _simple_predict_rates(stacks)
    report.print_table(
        f"cost_growth (medians of {CONSUMER_ROUNDS} and {HTTP_ROUNDS} alternating rounds)",
        [("rows in ads and moderation_results", "consumer rows/s", "simple_predict req/s")]
        + [
            (f"{size:,}", _median_and_rounds(consumer[size]), _median_and_rounds(http[size]))
            for size in SIZES
        ],
    )
    target = f">= {KEPT_SHARE} of the rate at {small:,} rows (a drop of at most 20%)"
    consumer_small, consumer_large = (statistics.median(consumer[size]) for size in SIZES)
    http_small, http_large = (statistics.median(http[size]) for size in SIZES)
    return {
        "cost_growth.consumer_throughput": {
            "value": round(consumer_large),
            "unit": "rows/s",
            "baseline": round(consumer_small),
            "ratio": ratio(consumer_large, consumer_small),
            "target": f"{target}; {DRAIN_TASKS:,} tasks drained at {large:,} rows",
        },
        "cost_growth.simple_predict_http": {
            "value": round(http_large),
            "unit": "req/s",
            "baseline": round(http_small),
            "ratio": ratio(http_large, http_small),
            "target": f"{target}; max rate at {large:,} rows",
        },
    }


def _median_and_rounds(rates: list[float]) -> str:
    rounds = ", ".join(f"{rate:,.0f}" for rate in rates)
    return f"{statistics.median(rates):,.0f} ({rounds})"


def _grow_tables(database_url: str, size: int) -> None:
    """`size` ads, and `size - DRAIN_TASKS` finished tasks of history (the drains add the rest)."""
    report.log(f"loading {size:,} rows into ads and moderation_results")
    seeding.seed_ads(database_url, size)
    with seeding.connect(database_url) as conn:
        history = conn.execute("SELECT count(*) FROM moderation_results").fetchone()[0]
    if size - DRAIN_TASKS > history:
        seeding.seed_completed_tasks(database_url, size - DRAIN_TASKS - history, ads=size)


def _consumer_rates(stacks: dict[int, backends.Stack]) -> dict[int, list[float]]:
    rates: dict[int, list[float]] = {size: [] for size in stacks}
    for _ in range(CONSUMER_ROUNDS):
        for size, stack in stacks.items():
            rates[size].append(_drain_rate(stack, size))
    return rates


def _drain_rate(stack: backends.Stack, size: int) -> float:
    """DRAIN_TASKS fresh tasks drained, then deleted, so that every turn finds the same table."""
    pending = seeding.seed_pending_tasks(stack.database_url, DRAIN_TASKS, size)
    rate = drain_tasks(stack, pending, drain_ours).rate
    seeding.delete_tasks(stack.database_url, [task_id for task_id, _ in pending])
    seeding.vacuum(stack.database_url, "moderation_results")
    return rate


def _simple_predict_rates(stacks: dict[int, backends.Stack]) -> dict[int, list[float]]:
    mixes = {size: loadgen.RequestMix("POST", "/?item_id={id}", max_id=size) for size in stacks}
    rates: dict[int, list[float]] = {size: [] for size in stacks}
    with contextlib.ExitStack() as servers:
        urls = {
            size: servers.enter_context(
                serve(
                    stack,
                    PREDICT_SOURCE,
                    "simple_predict",
                    backends.settings_env(backends.bench_settings(stack)),
                    mixes[size],
                )
            )
            for size, stack in stacks.items()
        }
        for _ in range(HTTP_ROUNDS):
            for size, url in urls.items():
                rates[size].append(measure_max_rate(url, mixes[size], duration_s=MAX_RATE_S))
    return rates
