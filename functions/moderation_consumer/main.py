"""The moderation consumer: Kafka records of `moderation` in, verdicts in PostgreSQL out.

Two entry points over the same batch handler:
- `process_records(records)`: a batch, as the local runner's poll loop passes it.
- `moderation_consumer(request)`: one record pushed by a platform as a CloudEvent over
  HTTP, e.g. by a Knative KafkaSource; deploy with
      functions-framework --source functions/moderation_consumer/main.py \\
          --target moderation_consumer
  It answers 200 once the record is durable, and 500 when it is not, for the platform to
  redeliver (shared/http/pushed_record.py lists every status). API_KEYS does not apply:
  deploy it where only the platform's trigger can reach it. The retry schedule of a
  temporary error (5/10/20 s by default) runs inside the request: give the trigger a delivery
  timeout of two minutes or more, retries and a dead-letter sink (README, "Scaling").
"""

import flask
import functions_framework

from shared import metrics
from shared.bootstrap import get_services
from shared.http import register_json_errors
from shared.http.pushed_record import ROUTE, serve_pushed_record
from shared.kafka.record import ConsumedRecord
from shared.moderation.batch import BatchReport
from shared.moderation.consumed_batch import process_and_count_batch

# Errors Flask raises before the handler runs (an unroutable path) are JSON too.
register_json_errors(functions_framework.errorhandler)
metrics.declare_route(ROUTE)


def process_records(records: list[ConsumedRecord]) -> BatchReport:
    return process_and_count_batch(get_services(), records)


@functions_framework.http
def moderation_consumer(request: flask.Request) -> flask.Response:
    return serve_pushed_record(request, get_services, process_records)
