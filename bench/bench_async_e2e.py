"""`async_predict` end to end: from the 202 to `completed`, at a fixed rate, on real Kafka.

`async_predict` runs on gunicorn (`functions-framework --target async_predict`),
the consumer in a process of its own (`python -m shared.runner.consumer`: the
partitioned poll loop feeding `moderation_consumer`'s handler). The open-loop
generator sends RATE requests per second for DURATION_S and notes the wall-clock
time each 202 arrived; a task's latency is its row's processed_at minus that time
(one machine, one clock). Also reported: the same from when the request was due,
which counts any queueing in front of async_predict, and, on the database's clock
alone, from the task's INSERT (before its 202 is sent) to its verdict: a figure the
load generator's own lateness, when the machine is saturated, cannot move. Every
accepted task must
complete; requests unanswered 10 s after the last one was due count as not
accepted. processed_at is `now()` of the UPDATE that writes the verdicts, i.e. when
it began: the UPDATE and its commit (a few ms at these batch sizes) are not in the
figure, the read and the model are.
"""

from __future__ import annotations

import importlib.util
import json
import time
from collections.abc import Sequence
from typing import Any

from bench import backends, loadgen, processes, report, seeding
from bench.figures import ratio, rounded_up
from infra import _process
from shared.settings import Settings

RESULT_GROUPS = ("async_e2e",)  # see bench/__main__.py

ADS = 10_000
RATE = 500
DURATION_S = 30
WARM_UP_TASKS = 30
COMPLETION_TIMEOUT_S = 60.0
P99_TARGET_MS = 250.0
SUSTAINED_SHARE = 0.99
SOURCE = backends.REPO_ROOT / "functions" / "async_predict" / "main.py"
CONSUMER_MODULE = "shared.runner.consumer"


def run() -> dict[str, dict[str, Any]]:
    if importlib.util.find_spec(CONSUMER_MODULE) is None:
        raise RuntimeError(f"expected the consumer entry point {CONSUMER_MODULE}, found none")
    stack = backends.stack()
    seeding.reset_tables(stack.database_url)
    seeding.seed_ads(stack.database_url, ADS)
    settings = backends.bench_settings(stack)
    env = backends.settings_env(settings)
    mix = loadgen.RequestMix("POST", "/?item_id={id}", max_id=ADS)
    with (
        backends.fresh_topics(settings),
        # One worker, as the HTTP benches: a second one, with the consumer, PostgreSQL,
        # Kafka and the load generator on the same 2 cores, made the 202s slower, not faster.
        processes.function_server(SOURCE, "async_predict", env, log_dir=stack.run_dir) as server,
        processes.python_process(
            ["-m", CONSUMER_MODULE],
            {**env, "PORT": str(_process.free_port())},
            log_path=stack.run_dir / "consumer.log",
        ),
    ):
        _warm_up(settings, server.url)
        load = loadgen.fixed_rate(
            server.url, mix, rate=RATE, duration_s=DURATION_S, keep_bodies=True
        )
        # Accepted means a 202: any other 2xx would be a task the bench cannot vouch for.
        accepted = {
            json.loads(body)["task_id"]: (due, at)
            for due, at, status, body in load.responses
            if status == 202
        }
        times = _wait_until_processed(settings, list(accepted))
    processed = {task: done for task, (_, done) in times.items()}
    after_202 = sorted((processed[task] - at) * 1000 for task, (_, at) in accepted.items())
    after_due = sorted((processed[task] - due) * 1000 for task, (due, _) in accepted.items())
    in_database = sorted((done - created) * 1000 for created, done in times.values())
    figures = {
        "call p99": load.percentile(99),
        "202->completed p50": loadgen.percentile(after_202, 50),
        "202->completed p99": loadgen.percentile(after_202, 99),
        "due->completed p99": loadgen.percentile(after_due, 99),
        "created->completed p99": loadgen.percentile(in_database, 99),
    }
    report.print_table(
        f"async_e2e ({RATE}/s for {DURATION_S} s; processed_at minus the 202's arrival)",
        [
            ("sent", "accepted (202)", "late sends", *figures),
            (load.sent, len(accepted), load.late_sends, *(f"{v:.1f} ms" for v in figures.values())),
        ],
    )
    if len(accepted) < SUSTAINED_SHARE * load.sent:
        report.log(
            f"async_predict did not sustain {RATE}/s: {len(accepted)} of {load.sent} accepted, "
            f"call p99 {figures['call p99']:.0f} ms; the queue is in front of the 202, so "
            "202->completed understates what a caller waits (see due->completed)"
        )
    return _entries(figures, accepted=len(accepted), sent=load.sent)


def _entries(figures: dict[str, float], *, accepted: int, sent: int) -> dict[str, dict[str, Any]]:
    load = f"{RATE}/s for {DURATION_S} s"
    return {
        "async_e2e.accepted_to_completed_p50": {
            "value": round(figures["202->completed p50"], 1),
            "unit": "ms",
            "baseline": None,
            "ratio": None,
            "target": f"report only; {load}",
        },
        "async_e2e.accepted_to_completed_p99": {
            "value": rounded_up(figures["202->completed p99"], 1),
            "unit": "ms",
            "baseline": None,
            "ratio": None,
            "target": f"< {P99_TARGET_MS:g} ms at {load}",
        },
        "async_e2e.due_to_completed_p99": {
            "value": round(figures["due->completed p99"], 1),
            "unit": "ms",
            "baseline": None,
            "ratio": None,
            "target": "report only; from when the request was due, so HTTP queueing counts",
        },
        "async_e2e.created_to_completed_p99": {
            "value": round(figures["created->completed p99"], 1),
            "unit": "ms",
            "baseline": None,
            "ratio": None,
            "target": "report only; the database's clock, from the task's INSERT to its verdict",
        },
        "async_e2e.accept_http_p99": {
            "value": round(figures["call p99"], 1),
            "unit": "ms",
            "baseline": None,
            "ratio": None,
            "target": "report only; the call itself, from when it was due to its answer (a failed"
            " or unanswered one to when it failed or was given up)",
        },
        "async_e2e.accepted_share": {
            "value": accepted,
            "unit": "tasks",
            "baseline": sent,
            "ratio": ratio(accepted, sent, 3),
            "target": f"= 1.0: every request of {load} accepted, each one then completed",
        },
    }


def _warm_up(settings: Settings, url: str) -> None:
    """A few tasks through the whole path, so the consumer has its partitions and its model."""
    task_ids = []
    for item_id in range(1, WARM_UP_TASKS + 1):
        status, body = processes.http_request(
            f"{url}/?item_id={item_id}", method="POST", body=b"", timeout_s=30.0
        )
        if status != 202:
            raise RuntimeError(f"warm-up async_predict answered {status}: {body[:300]!r}")
        task_ids.append(json.loads(body)["task_id"])
    _wait_until_processed(settings, task_ids)


def _wait_until_processed(
    settings: Settings, task_ids: Sequence[int]
) -> dict[int, tuple[float, float]]:
    """task_id -> (created_at, processed_at) in epoch seconds, once every task is finished
    or at the deadline."""
    deadline = time.monotonic() + COMPLETION_TIMEOUT_S
    with seeding.connect(settings.database_url) as conn:
        while True:
            rows = conn.execute(
                "SELECT id, status, extract(epoch FROM created_at)::float8,"
                " extract(epoch FROM processed_at)::float8"
                " FROM moderation_results WHERE id = ANY(%s) AND status <> 'pending'",
                (list(task_ids),),
            ).fetchall()
            if len(rows) == len(task_ids) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    failed = [row[0] for row in rows if row[1] != "completed"]
    if failed:
        raise RuntimeError(f"{len(failed)} task(s) failed, e.g. {failed[:5]}")
    if len(rows) < len(task_ids):
        raise RuntimeError(
            f"{len(task_ids) - len(rows)} of {len(task_ids)} tasks still pending "
            f"{COMPLETION_TIMEOUT_S:.0f} s after the load ended"
        )
    return {row[0]: (row[2], row[3]) for row in rows}
