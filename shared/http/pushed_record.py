"""One `moderation` record pushed over HTTP as a CloudEvent (a Knative KafkaSource, say),
brought to a durable outcome before the answer.

It answers 200 once the record is durable (completed, failed, dead-lettered or a known
duplicate); 400 for a request that is not a CloudEvent, or one of the dead-letter
topic, 405 for one that is not a POST,
413 for one larger than any record our producers write; 500 for a bug or settings that
do not validate, which makes the platform redeliver. It has no endpoint wrapper: its
refusals and its 200 differ from the API's, and API_KEYS does not apply (a KafkaSource
sends no such header).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

import flask

from shared import metrics
from shared.bootstrap import Services
from shared.errors import MalformedMessage
from shared.http.errors import BodyLeftUnread, json_error, misconfigured
from shared.http.request_limits import (
    read_body_within,
    refusal_leaving_the_body_unread,
    require_method,
)
from shared.invalid_settings import InvalidSettings
from shared.kafka.cloud_event import InvalidCloudEvent, record_from_http
from shared.kafka.config import MAX_TASK_RECORD_BYTES
from shared.kafka.envelope import parse_task_message
from shared.kafka.record import ConsumedRecord
from shared.moderation.batch import BatchReport

log = logging.getLogger(__name__)

ROUTE = "moderation_consumer"
# `moderation` takes records up to 1 MiB; a structured-mode envelope carries one base64
# encoded, a third bigger. Anything larger came from no producer of ours (a compressed
# batch of another's may hold a larger value), and refusing it keeps every dead letter
# within what our producer sends (shared/kafka/config.py).
MAX_PUSH_BYTES = 2 * MAX_TASK_RECORD_BYTES
# The whole of a 200: the record is durable (verdict, failure or dead letter written).
PROCESSED = {"status": "processed"}
NOT_PROCESSED = "Internal server error: the record was not processed"

BatchProcessor = Callable[[list[ConsumedRecord]], BatchReport]


def serve_pushed_record(
    request: flask.Request, services: Callable[[], Services], process: BatchProcessor
) -> flask.Response:
    """Answer a pushed record once `process` has made it durable; counted in the metrics
    as every HTTP function's requests are."""
    started = time.perf_counter()
    response = _consume_pushed(request, services, process)
    metrics.observe_request(ROUTE, response.status_code, time.perf_counter() - started)
    return response


def _consume_pushed(
    request: flask.Request, services: Callable[[], Services], process: BatchProcessor
) -> flask.Response:
    try:
        require_method(request, ("POST",))
        body = read_body_within(request, MAX_PUSH_BYTES)
    except BodyLeftUnread as refusal:
        return refusal_leaving_the_body_unread(refusal)
    record: ConsumedRecord | None = None
    try:
        # Inside the try: settings that do not validate are a 500 in JSON, and counted.
        settings = services().settings
        record = record_from_http(
            request.headers, body, default_topic=settings.kafka_moderation_topic
        )
        _refuse_dead_letters(record, settings.kafka_dlq_topic)
        report = process([record])
    except InvalidCloudEvent as error:
        return json_error(400, str(error))
    except InvalidSettings as error:
        return misconfigured(error, NOT_PROCESSED)
    except Exception:
        log.exception(
            "the pushed record was not processed; the platform redelivers it",
            extra=_described(record),
        )
        return json_error(500, NOT_PROCESSED)
    # The outcome goes to the log, not the answer: whoever can reach this route could
    # otherwise learn, task by task, which ad it is for and whether it is finished.
    log.info("pushed record processed", extra={**_described(record), **dataclasses.asdict(report)})
    return flask.jsonify(PROCESSED)


def _refuse_dead_letters(record: ConsumedRecord, dlq_topic: str) -> None:
    """InvalidCloudEvent for a record of the dead-letter topic: a trigger that also
    covers it would push back every letter, malformed as its record was, whose new
    letter it would push again, without end. The letter stays on its topic."""
    if record.topic == dlq_topic:
        raise InvalidCloudEvent(
            f"the record is from the dead-letter topic {dlq_topic!r}, which this function "
            "does not consume: its trigger must cover the moderation topic alone"
        )


def _described(record: ConsumedRecord | None) -> dict[str, int]:
    """The record's position and the task it names, for its log lines; none before the
    request was read as a record."""
    if record is None:
        return {}
    return {**_named_task(record), "partition": record.partition, "offset": record.offset}


def _named_task(record: ConsumedRecord) -> dict[str, int]:
    """The task_id and item_id the record names, for its log line; none if it names none
    (a malformed record's letter is logged with its reason)."""
    try:
        message = parse_task_message(record.value)
    except MalformedMessage:
        return {}
    return {"task_id": message.task_id, "item_id": message.item_id}
