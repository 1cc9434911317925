"""The README's metrics table names every metric the service exports, and only those.

Like the settings table, it is where an operator looks a metric up, and a metric added
or renamed without it would leave dashboards built from the README wrong.
"""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import Counter, Gauge, Histogram

from shared import metrics

README = Path(__file__).resolve().parents[2] / "README.md"


def documented_metrics() -> set[str]:
    section = README.read_text().split("\n## Monitoring\n", 1)[1].split("\n## ", 1)[0]
    return {
        match[1]
        for line in section.splitlines()
        if (match := re.match(r"\| `(moderation_[a-z_]+)` \|", line))
    }


def exported_metrics() -> set[str]:
    """Each metric object of shared/metrics.py by the name a scrape shows."""
    names = set()
    for value in vars(metrics).values():
        if isinstance(value, Counter):
            names.add(f"{value._name}_total")
        elif isinstance(value, Gauge | Histogram):
            names.add(value._name)
    return names


def test_the_monitoring_table_lists_every_exported_metric_and_no_other():
    exported = exported_metrics()

    assert len(exported) >= 10  # the scan found the metrics module's objects
    assert documented_metrics() == exported
