"""The moderation consumer: Kafka records of `moderation` in, verdicts in PostgreSQL out.

Two entry points over the same batch handler:
- `process_records(records)`: a batch, as the local runner's poll loop passes it.
- `moderation_consumer(cloud_event)`: one record pushed by a platform, e.g. a Knative
  KafkaSource; deploy with
      functions-framework --source functions/moderation_consumer/main.py \
          --target moderation_consumer --signature-type cloudevent
  An exception here makes the platform redeliver the event.
"""

import time

import functions_framework
from cloudevents.http import CloudEvent

from shared import metrics
from shared.bootstrap import get_services
from shared.kafka.cloud_event import record_from_cloud_event
from shared.kafka.record import ConsumedRecord
from shared.moderation.batch import BatchReport, process_moderation_batch


def process_records(records: list[ConsumedRecord]) -> BatchReport:
    started = time.perf_counter()
    report = process_moderation_batch(get_services(), records)
    metrics.observe_batch_report(report, time.perf_counter() - started)
    return report


@functions_framework.cloud_event
def moderation_consumer(cloud_event: CloudEvent) -> None:
    topic = get_services().settings.kafka_moderation_topic
    process_records([record_from_cloud_event(cloud_event, default_topic=topic)])
