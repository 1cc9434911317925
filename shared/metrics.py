"""Prometheus metrics of the service (exposed at /metrics by the local runner and by the
consumer and relay entry points).

Callers use the functions below, never the metric objects, so names and labels
are defined in this one place.
"""

from __future__ import annotations

import functools
import threading
import time
from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

if TYPE_CHECKING:
    from shared.moderation.batch import BatchReport

# Each counter and histogram would export a `_created` gauge too, its start time: a
# series per metric and label set that no documented query uses.
disable_created_metrics()

REQUESTS = Counter(
    "moderation_http_requests_total", "HTTP requests by route and status", ["route", "status"]
)
CONNECTIONS_REFUSED = Counter(
    "moderation_http_connections_refused_total",
    "Connections the runner's, consumer's or relay's HTTP server answered with a 503, "
    "serving as many as it may at once",
)
# Up to 30 s: a request waiting for a database connection gives up at
# DB_CONNECT_TIMEOUT_S (5 s by default), and must not land past the last bucket.
HTTP_LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5)
HTTP_LATENCY_BUCKETS_S += (1, 2.5, 5, 10, 30)
REQUEST_LATENCY = Histogram(
    "moderation_http_request_duration_seconds",
    "HTTP request latency by route",
    ["route"],
    buckets=HTTP_LATENCY_BUCKETS_S,
)
TASKS = Counter(
    "moderation_tasks_total",
    "Consumed moderation records by outcome: completed, failed, duplicate, or rejected"
    " (dead-lettered alone, failing no task: malformed, or naming no task or another ad)",
    ["outcome"],
)
RETRIES = Counter(
    "moderation_batch_retries_total", "Batch attempts repeated after a temporary error"
)
REPLAYS = Counter(
    "moderation_batch_replays_total",
    "Batches the poll loop fetched again because their handler raised past its own"
    " retries (a bug; replayed after a back-off, until it passes)",
)
DLQ_RECORDS = Counter(
    "moderation_dlq_records_total", "Records written to the dead-letter outbox for the DLQ topic"
)
# Up to 5 minutes: a batch that waits out the whole retry schedule (35 s by default),
# then for the database to record its failures, takes over a minute.
BATCH_DURATION_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_DURATION_BUCKETS_S += (60, 120, 300)
BATCH_DURATION = Histogram(
    "moderation_batch_duration_seconds",
    "Time to bring one consumed batch to a durable outcome",
    buckets=BATCH_DURATION_BUCKETS_S,
)
BATCH_SIZE = Histogram(
    "moderation_batch_size_records",
    "Records per batch handed to the consumer handler",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000),
)
CONSUMER_LAG = Gauge(
    "moderation_consumer_lag_records",
    "Records behind the partition's high watermark, by partition",
    ["topic", "partition"],
)
OUTBOX_SWEEPS = Counter(
    "moderation_outbox_sweeps_total",
    "Relay sweeps by what they publish (task, dead_letter) and result (ok, failed)",
    ["kind", "result"],
)
OUTBOX_PUBLISHED = Counter(
    "moderation_outbox_published_total",
    "Outbox rows the relay published, by kind (task, dead_letter)",
    ["kind"],
)
OUTBOX_BACKLOG = Gauge(
    "moderation_outbox_backlog",
    "Outbox rows past OUTBOX_GRACE_S still waiting for the relay after its last pass, by"
    " kind (task, dead_letter); counted up to 10,000",
    ["kind"],
)
OUTBOX_OLDEST_AGE = Gauge(
    "moderation_outbox_oldest_age_seconds",
    "Age of the oldest outbox row in moderation_outbox_backlog (0 with none), by kind"
    " (task, dead_letter)",
    ["kind"],
)
EXPIRED_IDEMPOTENCY_KEYS = Counter(
    "moderation_idempotency_keys_expired_total",
    "Idempotency keys the relay deleted once expired (IDEMPOTENCY_KEY_TTL_S after their write)",
)
MODEL_INFO = Gauge(
    "moderation_model_info", "The loaded model: 1 for its version, the label", ["version"]
)

_OUTCOMES = ("completed", "failed", "duplicate", "rejected")
_OUTBOX_KINDS = ("task", "dead_letter")

# The outcome and sweep series exist from the start, at 0 (and each route's, once its
# function is built: `declare_route`): a series born at 1 on the first failure after a
# restart is a step that rate() and increase() do not see, and an alert would miss it.
for _outcome in _OUTCOMES:
    TASKS.labels(outcome=_outcome)
for _kind in _OUTBOX_KINDS:
    OUTBOX_PUBLISHED.labels(kind=_kind)
    OUTBOX_BACKLOG.labels(kind=_kind)
    OUTBOX_OLDEST_AGE.labels(kind=_kind)
    for _result in ("ok", "failed"):
        OUTBOX_SWEEPS.labels(kind=_kind, result=_result)

_model_version: str | None = None
_model_version_lock = threading.Lock()


# The statuses an alert on a route watches, whose series exist from the route's start.
_SERVER_ERRORS = (500, 503)


def declare_route(route: str) -> None:
    """Create a route's latency series and its server-error counts at 0, when its
    function is built, so that the first 5xx after a restart is a step rate() sees."""
    for status in _SERVER_ERRORS:
        _request_series(route, status)


def observe_request(route: str, status: int, seconds: float) -> None:
    requests, latency = _request_series(route, status)
    requests.inc()
    latency.observe(seconds)


# A route's series, looked up once: `labels()` validates and locks on every call, which
# cost each request ~11 µs against ~3 µs for the counting itself. Routes are a fixed
# set and statuses a handful, so the cache stays small.
@functools.lru_cache(maxsize=512)
def _request_series(route: str, status: int) -> tuple[Counter, Histogram]:
    return REQUESTS.labels(route=route, status=str(status)), REQUEST_LATENCY.labels(route=route)


def count_connection_refused_as_busy() -> None:
    CONNECTIONS_REFUSED.inc()


def count_batch_retry() -> None:
    RETRIES.inc()


def count_batch_replay() -> None:
    REPLAYS.inc()


def observe_batch_report(report: BatchReport, seconds: float | None = None) -> None:
    """Count one processed batch's outcomes and dead letters (its retries were counted
    as each began: `count_batch_retry`)."""
    counts = dict(
        zip(
            _OUTCOMES,
            (report.completed, report.failed, report.duplicates, report.rejected),
            strict=True,
        )
    )
    for outcome, count in counts.items():
        if count:
            TASKS.labels(outcome=outcome).inc(count)
    if report.dead_lettered:
        DLQ_RECORDS.inc(report.dead_lettered)
    if seconds is not None:
        BATCH_DURATION.observe(seconds)


def observe_batch_size(records: int) -> None:
    BATCH_SIZE.observe(records)


def set_consumer_lag(topic: str, partition: int, lag: int) -> None:
    CONSUMER_LAG.labels(topic=topic, partition=str(partition)).set(lag)


def forget_partition(topic: str, partition: int) -> None:
    """Drop a partition's lag once it is no longer ours, so a stale value does not linger."""
    CONSUMER_LAG.remove(topic, str(partition))


def record_model_version(version: str) -> None:
    """One series, for the version in use: a reload to a new version replaces the old one."""
    global _model_version
    with _model_version_lock:
        if version == _model_version:
            return
        MODEL_INFO.clear()
        MODEL_INFO.labels(version=version).set(1)
        _model_version = version


def count_expired_idempotency_keys(deleted: int) -> None:
    EXPIRED_IDEMPOTENCY_KEYS.inc(deleted)


# kind -> (when, on the monotonic clock, the backlog was last counted; its oldest age then)
_oldest_counted: dict[str, tuple[float, float]] = {}


def set_outbox_backlog(kind: str, rows: int, oldest_age_s: float) -> None:
    OUTBOX_BACKLOG.labels(kind=kind).set(rows)
    OUTBOX_OLDEST_AGE.labels(kind=kind).set(oldest_age_s)
    _oldest_counted[kind] = (time.monotonic(), oldest_age_s)


def age_uncounted_outbox_backlog() -> None:
    """A relay pass that could not count the backlog because the database is down, and
    published nothing: the rows it last counted cannot have been published since, as
    publishing marks them in the database, so the oldest one's age goes on growing, and
    an alert on it fires through a database outage too instead of freezing at its last
    value."""
    now = time.monotonic()
    for kind, (counted_at, oldest_age_s) in list(_oldest_counted.items()):
        if oldest_age_s > 0:
            OUTBOX_OLDEST_AGE.labels(kind=kind).set(oldest_age_s + now - counted_at)


def observe_outbox_sweep(kind: str, published: int | None) -> None:
    """One relay sweep of `kind`: how many rows it published, or None if it failed."""
    OUTBOX_SWEEPS.labels(kind=kind, result="failed" if published is None else "ok").inc()
    if published:
        OUTBOX_PUBLISHED.labels(kind=kind).inc(published)
