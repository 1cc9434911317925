"""Draining `moderation`: our consumer against a floor pipeline and a seed-style worker, same run.

All four read pre-produced task records from a fresh 3-partition topic whose
tasks are pending rows in moderation_results, and the clock runs from the first
batch handed over to the moment every task is durable (the group join is left out).

Ours, the floor and ours without the model's cost run ROUNDS times each, taking turns,
and each side's median is compared.

- ours: the real `PartitionedPollLoop` + `process_moderation_batch` + the default
  model, at the default batch size (CONSUMER_BATCH_SIZE).
- floor: a plain `consume()` loop and one self-committing batched UPDATE per batch, no
  model, the task ids read as cheaply as ours reads them: what Kafka and PostgreSQL
  cost on their own, one batch at a time (ours runs a worker per partition).
- seed-style: one message at a time, a new connection per message, one SELECT of
  the ad, the same (fast) model on that one ad, one single-row UPDATE.
- ours without the model's cost: ours as it is, but a constant verdict in place of the
  model, taking turns with the other two. Not a target: the most that any speed-up of
  the model could give, so a run shows how much of the gap to the floor the model is.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import psycopg
from confluent_kafka import Consumer, TopicPartition

from bench import backends, report, seeding
from bench.figures import ratio
from shared.bootstrap import build_services
from shared.domain import Ad, BatchVerdicts, Verdict
from shared.kafka.config import consumer_config
from shared.kafka.envelope import parse_canonical_batch
from shared.kafka.poll_loop import BatchHandler, PartitionedPollLoop
from shared.kafka.record import ConsumedRecord
from shared.moderation.batch import process_moderation_batch
from shared.ports import Model
from shared.settings import Settings

RESULT_GROUPS = ("consumer_throughput",)  # see bench/__main__.py

ADS = 50_000
TASKS = 50_000
SEED_STYLE_TASKS = 2_000
DRAIN_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0
# Ours and the floor take turns, and each side's median counts: a slow spell of the
# machine then hits both sides instead of whichever ran during it. Five turns, not
# three: the floor alone measured 68k to 102k rows/s within one run of three.
ROUNDS = 5
FLOOR_TARGET = 0.5
SEED_TARGET = 20

FLOOR_UPDATE = """
    UPDATE moderation_results
    SET status = 'completed', is_violation = false, probability = 0, model_version = 'floor',
        attempts = attempts + 1, processed_at = now()
    WHERE id = ANY(%s) AND status = 'pending'
"""
SEED_SELECT = """
    SELECT a.id, a.seller_id, s.is_verified, a.name, a.description, a.category, a.images_qty
    FROM ads a JOIN sellers s ON s.id = a.seller_id WHERE a.id = %s
"""
SEED_UPDATE = """
    UPDATE moderation_results
    SET status = 'completed', is_violation = %s, probability = %s, model_version = %s,
        attempts = attempts + 1, processed_at = now()
    WHERE id = %s AND status = 'pending'
"""


@dataclass(frozen=True)
class Drain:
    rows: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.rows / self.seconds


def run() -> dict[str, dict[str, Any]]:
    stack = backends.stack()
    seeding.reset_tables(stack.database_url)
    seeding.seed_ads(stack.database_url, ADS)
    ours_rounds: list[Drain] = []
    floor_rounds: list[Drain] = []
    model_free_rounds: list[Drain] = []
    for _ in range(ROUNDS):
        ours_rounds.append(measure(stack, TASKS, ADS, drain_ours))
        floor_rounds.append(measure(stack, TASKS, ADS, drain_floor))
        model_free_rounds.append(measure(stack, TASKS, ADS, drain_ours_without_model_cost))
    ours, floor = median_drain(ours_rounds), median_drain(floor_rounds)
    model_free = median_drain(model_free_rounds)
    seed = measure(stack, SEED_STYLE_TASKS, ADS, drain_seed_style)
    report.print_table(
        f"consumer_throughput (all but seed-style: median of {ROUNDS} rounds, taking turns)",
        [("pipeline", "rows", "seconds", "rows/s", "each round, rows/s")]
        + [
            (name, f"{d.rows:,}", f"{d.seconds:.2f}", f"{d.rate:,.0f}", rounds)
            for name, d, rounds in (
                ("ours", ours, _rates(ours_rounds)),
                ("floor", floor, _rates(floor_rounds)),
                ("ours, constant verdicts", model_free, _rates(model_free_rounds)),
                ("seed-style", seed, ""),
            )
        ],
    )
    return {
        "consumer_throughput.vs_floor": {
            "value": round(ours.rate),
            "unit": "rows/s",
            "baseline": round(floor.rate),
            "ratio": ratio(ours.rate, floor.rate),
            "target": f">= {FLOOR_TARGET} (floor: consume + one batched UPDATE, no model)",
        },
        "consumer_throughput.model_free_vs_floor": {
            "value": round(model_free.rate),
            "unit": "rows/s",
            "baseline": round(floor.rate),
            "ratio": ratio(model_free.rate, floor.rate),
            "target": "report only; ours with a constant verdict in place of the model: the"
            " most a faster model could give",
        },
        "consumer_throughput.vs_seed_worker": {
            "value": round(ours.rate),
            "unit": "rows/s",
            "baseline": round(seed.rate),
            "ratio": ratio(ours.rate, seed.rate, 1),
            "target": f">= {SEED_TARGET} (seed: a connection, the ad's SELECT, the model and"
            " an UPDATE per message)",
        },
    }


def median_drain(rounds: Sequence[Drain]) -> Drain:
    return sorted(rounds, key=lambda drain: drain.rate)[len(rounds) // 2]


def _rates(rounds: Sequence[Drain]) -> str:
    return ", ".join(f"{drain.rate:,.0f}" for drain in rounds)


def measure(
    stack: backends.Stack, tasks: int, ads: int, drain: Callable[[Settings, int], Drain]
) -> Drain:
    """`tasks` fresh pending rows (and no others), drained by `drain`."""
    seeding.reset_tasks(stack.database_url)
    return drain_tasks(stack, seeding.seed_pending_tasks(stack.database_url, tasks, ads), drain)


def drain_tasks(
    stack: backends.Stack,
    pending: Sequence[tuple[int, int]],
    drain: Callable[[Settings, int], Drain],
) -> Drain:
    """A fresh topic holding one record per pending (task_id, item_id), drained by `drain`."""
    settings = backends.bench_settings(stack)
    with backends.fresh_topics(settings):
        seeding.produce_tasks(settings, pending)
        result = drain(settings, len(pending))
    _check_all_completed(stack.database_url, [task_id for task_id, _ in pending])
    return result


class _Progress:
    """Tasks made durable so far, and when the first batch started."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.done = 0
        self.first_started: float | None = None
        self.finished_at: float | None = None
        self.all_done = threading.Event()
        self._lock = threading.Lock()

    def started(self) -> None:
        with self._lock:
            if self.first_started is None:
                self.first_started = time.perf_counter()

    def add(self, count: int) -> None:
        with self._lock:
            self.done += count
            if self.done >= self.expected and not self.all_done.is_set():
                self.finished_at = time.perf_counter()
                self.all_done.set()

    def result(self, what: str, *, wait_s: float = DRAIN_TIMEOUT_S) -> Drain:
        """The drain, once every task is done, waited for up to `wait_s`: none for a loop
        that ran on this thread until done or out of time, which nothing can finish now."""
        if not self.all_done.wait(wait_s):
            raise RuntimeError(
                f"{what}: {self.done} of {self.expected} tasks done after {DRAIN_TIMEOUT_S:.0f} s"
            )
        assert self.first_started is not None and self.finished_at is not None
        return Drain(self.done, self.finished_at - self.first_started)


def drain_ours(settings: Settings, expected: int) -> Drain:
    return _drain_by_our_consumer(settings, expected, constant_verdicts=False)


def drain_ours_without_model_cost(settings: Settings, expected: int) -> Drain:
    return _drain_by_our_consumer(settings, expected, constant_verdicts=True)


def _drain_by_our_consumer(settings: Settings, expected: int, *, constant_verdicts: bool) -> Drain:
    services = build_services(settings)
    try:
        model = services.model.get()  # loaded before the clock starts, as in a running consumer
        if constant_verdicts:
            # Same pool and publisher (closed below), another model.
            services = replace(services, model=_ConstantModelSource(model))
        services.db.ping()
        progress = _Progress(expected)

        def handle(records: list[ConsumedRecord]) -> object:
            progress.started()
            report = process_moderation_batch(services, records)
            # The handler returned: these tasks are committed (completed, failed or known).
            progress.add(report.completed + report.failed + report.duplicates)
            return report

        with running_poll_loop(settings, handle):
            return progress.result("ours")
    finally:
        services.close()


class _ConstantModel:
    """The real model's version and threshold, and a verdict that costs nothing."""

    def __init__(self, model: Model) -> None:
        self.version, self.threshold = model.version, model.threshold

    def predict(self, ads: list[Ad]) -> list[Verdict]:
        return [Verdict(ad.item_id, False, 0.0, self.version) for ad in ads]

    def predict_batch(self, ads: list[Ad]) -> BatchVerdicts:
        return BatchVerdicts(np.zeros(len(ads), np.bool_), np.zeros(len(ads)), self.version)


class _ConstantModelSource:
    def __init__(self, model: Model) -> None:
        self._model = _ConstantModel(model)

    def get(self) -> Model:
        return self._model

    def loaded(self) -> Model | None:
        return self._model


@contextmanager
def running_poll_loop(settings: Settings, handle_batch: BatchHandler) -> Iterator[None]:
    """The real poll loop on a thread of this process, stopped (bounded) when the block ends."""
    loop = PartitionedPollLoop(
        Consumer(consumer_config(settings)),
        settings.kafka_moderation_topic,
        handle_batch,
        batch_size=settings.consumer_batch_size,
        poll_timeout_s=settings.consumer_poll_timeout_s,
        max_workers=settings.db_pool_max_size,
    )
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stop,), name="bench-poll-loop", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(STOP_TIMEOUT_S)
        if thread.is_alive():
            raise RuntimeError(f"the poll loop did not stop within {STOP_TIMEOUT_S:.0f} s")


def drain_floor(settings: Settings, expected: int) -> Drain:
    consumer = Consumer(consumer_config(settings))
    consumer.subscribe([settings.kafka_moderation_topic])
    # Autocommit: the UPDATE commits itself, one round trip, as ours does; inside a
    # transaction BEGIN and COMMIT made it three.
    conn = psycopg.connect(settings.database_url, autocommit=True)
    progress = _Progress(expected)
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    try:
        while not progress.all_done.is_set() and time.monotonic() < deadline:
            messages = [
                m for m in consumer.consume(settings.consumer_batch_size, 0.1) if m.error() is None
            ]
            if not messages:
                continue
            progress.started()
            updated = conn.execute(FLOOR_UPDATE, (_floor_task_ids(messages),)).rowcount
            _store_offsets(consumer, messages)
            progress.add(updated)
    finally:
        consumer.close()
        conn.close()
    return progress.result("floor", wait_s=0)


def _floor_task_ids(messages: Sequence[Any]) -> list[int]:
    """The task ids, read the cheapest way there is, as ours reads them: the two regexes
    over the joined batch (json.loads per record was an eighth of the floor's time)."""
    values = [message.value() for message in messages]
    parsed = parse_canonical_batch(values)
    if parsed is not None:
        return parsed[0]
    return [json.loads(value)["task_id"] for value in values]


def drain_seed_style(settings: Settings, expected: int) -> Drain:
    from shared.model import load_model

    model = load_model(settings.model_uri)
    consumer = Consumer(consumer_config(settings))
    consumer.subscribe([settings.kafka_moderation_topic])
    progress = _Progress(expected)
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    try:
        while not progress.all_done.is_set() and time.monotonic() < deadline:
            message = consumer.poll(0.1)
            if message is None or message.error() is not None:
                continue
            progress.started()
            task = json.loads(message.value())
            with psycopg.connect(settings.database_url) as conn:
                row = conn.execute(SEED_SELECT, (task["item_id"],)).fetchone()
                verdict = model.predict([Ad(*row)])[0]
                updated = conn.execute(
                    SEED_UPDATE,
                    (
                        verdict.is_violation,
                        verdict.probability,
                        verdict.model_version,
                        task["task_id"],
                    ),
                ).rowcount
            _store_offsets(consumer, [message])
            progress.add(updated)
    finally:
        consumer.close()
    return progress.result("seed-style", wait_s=0)


def _store_offsets(consumer: Consumer, messages: Sequence[Any]) -> None:
    last: dict[tuple[str, int], int] = {}
    for message in messages:
        last[(message.topic(), message.partition())] = message.offset()
    consumer.store_offsets(
        offsets=[
            TopicPartition(topic, partition, offset + 1)
            for (topic, partition), offset in last.items()
        ]
    )


def _check_all_completed(database_url: str, task_ids: Sequence[int]) -> None:
    statuses = seeding.count_by_status(database_url, task_ids)
    if statuses.get("completed", 0) != len(task_ids):
        raise RuntimeError(f"expected all {len(task_ids)} tasks completed, found {statuses}")
