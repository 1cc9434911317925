"""Prometheus metrics of the service (exposed at /metrics by the local runner)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REQUESTS = Counter(
    "moderation_http_requests_total", "HTTP requests by route and status", ["route", "status"]
)
REQUEST_LATENCY = Histogram(
    "moderation_http_request_duration_seconds",
    "HTTP request latency by route",
    ["route"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


def observe_request(route: str, status: int, seconds: float) -> None:
    REQUESTS.labels(route=route, status=str(status)).inc()
    REQUEST_LATENCY.labels(route=route).observe(seconds)
