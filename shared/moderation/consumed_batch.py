"""The consumer function's batch entry: process a batch of `moderation` records and count
it in the metrics, whether it returns or is abandoned."""

from __future__ import annotations

import time
from collections.abc import Sequence

from shared import metrics
from shared.bootstrap import Services
from shared.kafka.record import ConsumedRecord
from shared.moderation.batch import BatchReport, process_moderation_batch


def process_and_count_batch(services: Services, records: Sequence[ConsumedRecord]) -> BatchReport:
    """`process_moderation_batch`, with its outcomes and duration in the metrics."""
    started = time.perf_counter()
    report = BatchReport(records=len(records))
    try:
        return process_moderation_batch(services, records, report)
    finally:
        # Also for a batch abandoned in a retry wait: what it made durable (letters
        # published, tasks failed) is not counted again when its records come back.
        metrics.observe_batch_report(report, time.perf_counter() - started)
