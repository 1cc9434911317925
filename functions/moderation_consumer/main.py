"""The moderation consumer: Kafka records of `moderation` in, verdicts in PostgreSQL out.

Two entry points over the same batch handler:
- `process_records(records)`: a batch, as the local runner's poll loop passes it.
- `moderation_consumer(request)`: one record pushed by a platform as a CloudEvent over
  HTTP, e.g. by a Knative KafkaSource; deploy with
      functions-framework --source functions/moderation_consumer/main.py \\
          --target moderation_consumer
  It answers 200 once the record is durable (completed, failed, dead-lettered or a
  known duplicate); 400 for a request that is not a CloudEvent, 405 for one that is not
  a POST, 413 for one larger than any record our producers write; 500 for a bug, which
  makes the platform redeliver (as its trigger's delivery policy says). API_KEYS does
  not apply (a KafkaSource sends no such header): deploy it where only the platform's
  trigger can reach it. The retry schedule of a temporary error (5/10/20 s) runs inside
  the request: give the trigger a delivery timeout of two minutes or more, retries and
  a dead-letter sink (README, "Scaling").
"""

import dataclasses
import logging
import time

import flask
import functions_framework

from shared import metrics
from shared.bootstrap import get_services
from shared.errors import MalformedMessage
from shared.http import register_json_errors
from shared.http.endpoint import (
    read_body_within,
    refusal_leaving_the_body_unread,
    require_method,
)
from shared.http.errors import BodyLeftUnread, json_error
from shared.kafka.cloud_event import InvalidCloudEvent, record_from_http
from shared.kafka.config import MAX_TASK_RECORD_BYTES
from shared.kafka.envelope import parse_task_message
from shared.kafka.record import ConsumedRecord
from shared.moderation.batch import BatchReport, process_moderation_batch

log = logging.getLogger(__name__)

# Errors Flask raises before the handler runs (an unroutable path) are JSON too.
register_json_errors(functions_framework.errorhandler)


def process_records(records: list[ConsumedRecord]) -> BatchReport:
    started = time.perf_counter()
    report = BatchReport(records=len(records))
    try:
        return process_moderation_batch(get_services(), records, report)
    finally:
        # Also for a batch abandoned in a retry wait: what it made durable (letters
        # published, tasks failed) is not counted again when its records come back.
        metrics.observe_batch_report(report, time.perf_counter() - started)


# `moderation` takes records up to 1 MiB; a structured-mode envelope carries one base64
# encoded, a third bigger. Anything larger came from no producer of ours (a compressed
# batch of another's may hold a larger value), and refusing it keeps every dead letter
# within what our producer sends (shared/kafka/config.py).
MAX_PUSH_BYTES = 2 * MAX_TASK_RECORD_BYTES
# The whole of a 200: the record is durable (verdict, failure or dead letter written).
PROCESSED = {"status": "processed"}


metrics.declare_route("moderation_consumer")


@functions_framework.http
def moderation_consumer(request: flask.Request) -> flask.Response:
    # Counted as every HTTP function's requests are (it has no endpoint wrapper: its
    # refusals and its 200 differ from the API's).
    started = time.perf_counter()
    response = _consume_pushed(request)
    metrics.observe_request(
        "moderation_consumer", response.status_code, time.perf_counter() - started
    )
    return response


def _consume_pushed(request: flask.Request) -> flask.Response:
    topic = get_services().settings.kafka_moderation_topic
    try:
        require_method(request, ("POST",))
        body = read_body_within(request, MAX_PUSH_BYTES)
    except BodyLeftUnread as refusal:
        return refusal_leaving_the_body_unread(refusal)
    try:
        record = record_from_http(request.headers, body, default_topic=topic)
    except InvalidCloudEvent as error:
        return json_error(400, str(error))
    try:
        report = process_records([record])
    except Exception:
        log.exception("the pushed record was not processed; the platform redelivers it")
        return json_error(500, "Internal server error: the record was not processed")
    # The outcome goes to the log, not the answer: whoever can reach this route could
    # otherwise learn, task by task, which ad it is for and whether it is finished.
    log.info(
        "pushed record processed",
        extra={
            **_named_task(record),
            "partition": record.partition,
            "offset": record.offset,
            **dataclasses.asdict(report),
        },
    )
    return flask.jsonify(PROCESSED)


def _named_task(record: ConsumedRecord) -> dict[str, int]:
    """The task_id and item_id the record names, for its log line; none if it names none
    (a malformed record's letter is logged with its reason)."""
    try:
        message = parse_task_message(record.value)
    except MalformedMessage:
        return {}
    return {"task_id": message.task_id, "item_id": message.item_id}
