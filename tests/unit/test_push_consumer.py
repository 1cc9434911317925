"""The push entry point: a Kafka record as a CloudEvent over HTTP, its value byte for byte."""

from __future__ import annotations

import io
import json
import logging

import pytest
from functions_framework import create_app
from prometheus_client import REGISTRY

from shared.cancellation import ShutdownRequested
from shared.kafka.cloud_event import InvalidCloudEvent, record_from_http
from shared.kafka.envelope import encode_task_message
from tests.unit.http_client import assert_json_error

SOURCE = "/apis/v1/namespaces/default/kafkasources/moderation#moderation"


def _binary_headers(offset: int, **extra: str) -> dict[str, str]:
    """What a Knative KafkaSource sends in binary mode."""
    return {
        "ce-specversion": "1.0",
        "ce-type": "dev.knative.kafka.event",
        "ce-source": SOURCE,
        "ce-id": f"partition:0/offset:{offset}",
        "ce-subject": f"partition:0#{offset}",
        "ce-key": "7",
        "content-type": "application/json",
        **extra,
    }


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 30_000 + b"]" * 30_000,  # nested past any JSON parser's stack
        b'"abc"',  # a JSON string, not its text
        b"null",
        b'{"task_id": 1,  "item_id": 1, "task_id": 2}',  # spacing and a repeated key
        b"\xff\xfe not UTF-8",
    ],
)
def test_the_record_value_is_the_body_byte_for_byte(body):
    record = record_from_http(_binary_headers(41), body, default_topic="fallback")

    assert record.value == body
    assert (record.topic, record.partition, record.offset, record.key) == (
        "moderation",
        0,
        41,
        b"7",
    )


def test_kafka_headers_come_back_from_their_extensions():
    headers = _binary_headers(1, **{"ce-kafkaheadertraceparent": "00-abc-01"})

    record = record_from_http(headers, b"{}", default_topic="moderation")

    assert record.headers == (("traceparent", b"00-abc-01"),)


def test_a_structured_events_headers_keep_their_size_and_drop_names_utf8_cannot_hold():
    envelope = (
        '{"specversion": "1.0", "type": "t", "source": "s#moderation", "id": "1",'
        ' "subject": "partition:0#5", "data": "{}",'
        ' "kafkaheadertrace": "00-abc-01", "kafkaheader\\ud800": "v",'
        ' "kafkaheaderwide": ["\U000f0000\U000f0000"], "kafkaheadercount": 7}'
    ).encode()

    record = record_from_http(
        {"content-type": "application/cloudevents+json"}, envelope, default_topic="m"
    )

    # Sorted by name; a JSON value as JSON, no longer than it came (its repr was 2.5x).
    assert record.headers == (
        ("count", b"7"),
        ("trace", b"00-abc-01"),
        ("wide", '["\U000f0000\U000f0000"]'.encode()),
    )


def test_a_request_that_is_not_a_cloud_event_is_refused():
    with pytest.raises(InvalidCloudEvent, match="Not a CloudEvent"):
        record_from_http({"content-type": "application/json"}, b"{}", default_topic="m")


def _client():
    return create_app("moderation_consumer", "functions/moderation_consumer/main.py").test_client()


def test_a_pushed_record_nested_too_deeply_is_dead_lettered_and_acknowledged(services):
    nested = b"[" * 2000 + b"]" * 2000  # within the envelope's size limit, past json's stack

    response = _client().post("/", data=nested, headers=_binary_headers(5))

    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json() == {"status": "processed"}
    (letter,) = services.publisher.on_topic("moderation_dlq")
    assert letter.value == nested
    assert "nested too deeply" in dict(letter.headers)["x-exception-message"].decode()


def test_a_pushed_task_is_completed(services):
    with services.db.transaction() as tx:
        task_id = tx.create_task_for_existing_ad(1)
    _, value = encode_task_message(task_id, 1)

    response = _client().post("/", data=value, headers=_binary_headers(6))

    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json() == {"status": "processed"}
    assert services.db.state.tasks[task_id].status == "completed"


def test_a_pushed_records_log_line_names_its_task_and_item(services, caplog):
    caplog.set_level(logging.INFO)
    with services.db.transaction() as tx:
        task_id = tx.create_task_for_existing_ad(1)
    _, value = encode_task_message(task_id, 1)

    _client().post("/", data=value, headers=_binary_headers(6))
    _client().post("/", data=b"not json", headers=_binary_headers(7))

    named, malformed = [r for r in caplog.records if r.getMessage() == "pushed record processed"]
    assert (named.task_id, named.item_id, named.offset, named.completed) == (task_id, 1, 6, 1)
    assert not hasattr(malformed, "task_id")  # its letter's own line gives the reason
    assert (malformed.offset, malformed.dead_lettered) == (7, 1)


def test_a_record_of_the_dead_letter_topic_is_refused_rather_than_dead_lettered_again(services):
    # A trigger covering moderation_dlq too would push each new letter back, without end.
    source = "/apis/v1/namespaces/default/kafkasources/moderation#moderation_dlq"

    response = _client().post(
        "/", data=b"not json", headers=_binary_headers(3, **{"ce-source": source})
    )

    assert "dead-letter topic 'moderation_dlq'" in assert_json_error(response, 400)
    assert services.publisher.on_topic("moderation_dlq") == []
    assert services.db.state.letters == {}


def test_a_request_that_is_not_a_cloud_event_gets_a_json_400(services):
    response = _client().post("/", json={"task_id": 1, "item_id": 1})

    assert response.status_code == 400
    assert response.mimetype == "application/json"
    assert "Not a CloudEvent" in response.get_json()["detail"]


_ENVELOPE = b'{"specversion": "1.0", "type": "t", "source": "s", "id": "1", "data": %s}'


@pytest.mark.parametrize(
    "body",
    [
        _ENVELOPE % (b"[" * 30_000 + b"]" * 30_000),  # nested past json's stack
        _ENVELOPE % b'"\xff"',  # not UTF-8
        b'{"specversion": [1], "type": "t", "source": "s", "id": "1"}',  # unhashable
        _ENVELOPE % (b"1" * 5000),  # past Python's limit on integer digits
    ],
)
def test_a_structured_envelope_json_cannot_read_is_refused_with_a_short_reason(body):
    headers = {"content-type": "application/cloudevents+json"}

    with pytest.raises(InvalidCloudEvent) as refused:
        record_from_http(headers, body, default_topic="moderation")

    assert len(str(refused.value)) < 400


def test_a_structured_event_with_a_numeric_key_gives_the_key_as_bytes():
    body = _ENVELOPE.replace(b'"id": "1"', b'"id": "1", "key": 5') % b'{"task_id": 1}'

    record = record_from_http(
        {"content-type": "application/cloudevents+json"}, body, default_topic="moderation"
    )

    assert record.key == b"5"


def test_a_push_larger_than_any_record_of_the_topic_gets_a_json_413(services):
    response = _client().post("/", data=b"x" * (2 * 1024 * 1024 + 1), headers=_binary_headers(7))

    assert response.status_code == 413
    assert "over 2097152" in response.get_json()["detail"]
    assert services.publisher.on_topic("moderation_dlq") == []


def test_a_chunked_push_over_the_limit_gets_a_413_rather_than_being_cut_short(services):
    # werkzeug stops reading a chunked body at max_content_length without a word; the
    # first 2 MiB of it must not be taken for the record.
    body = b"x" * (2 * 1024 * 1024 + 10)
    response = _client().post(
        "/",
        input_stream=io.BytesIO(body),
        headers={**_binary_headers(8), "Transfer-Encoding": "chunked"},
        # No Content-Length, as gunicorn hands a chunked body over.
        environ_overrides={"wsgi.input_terminated": True, "CONTENT_LENGTH": ""},
    )

    assert response.status_code == 413, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    assert services.publisher.on_topic("moderation_dlq") == []
    assert services.db.state.letters == {}


def _pushes_counted(status: int) -> float:
    labels = {"route": "moderation_consumer", "status": str(status)}
    return REGISTRY.get_sample_value("moderation_http_requests_total", labels) or 0.0


def test_each_push_is_counted_by_its_status_as_the_api_functions_requests_are(services):
    with services.db.transaction() as tx:
        task_id = tx.create_task_for_existing_ad(1)
    _, value = encode_task_message(task_id, 1)
    before = {status: _pushes_counted(status) for status in (200, 400, 405)}

    _client().post("/", data=value, headers=_binary_headers(7))
    _client().post("/", json={"task_id": 1, "item_id": 1})
    _client().get("/", headers=_binary_headers(8))

    assert {status: _pushes_counted(status) - before[status] for status in before} == {
        200: 1,
        400: 1,
        405: 1,
    }


def test_a_push_that_is_not_a_post_gets_a_json_405(services):
    response = _client().get("/", headers=_binary_headers(9))

    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    assert "use POST" in response.get_json()["detail"]


@pytest.mark.parametrize(
    "subject",
    [
        "partition:0#" + "9" * 5000,  # more digits than int() converts by default
        "partition:0#9223372036854775808",  # past an int64 offset
        "partition:2147483648#1",  # past an int32 partition
        "partition:x#1",
    ],
)
def test_a_subject_beyond_kafkas_ranges_counts_as_no_position(subject):
    record = record_from_http(
        _binary_headers(1, **{"ce-subject": subject}), b"{}", default_topic="moderation"
    )

    # The position derived from the event id: negative, stable, and within bigint.
    again = record_from_http(
        _binary_headers(1, **{"ce-subject": subject}), b"{}", default_topic="moderation"
    )
    assert record.partition == -1
    assert -(2**63) <= record.offset < 0
    assert record.offset == again.offset


def test_events_of_no_kafka_position_with_different_ids_get_letters_of_their_own(services):
    # Their position comes from the id alone: two events of the same body and key at one
    # position would be one record to the outbox's unique key, and the second's letter lost.
    first, second = (
        _binary_headers(1, **{"ce-id": event_id}) for event_id in ("event-1", "event-2")
    )
    for headers in (first, second):
        del headers["ce-subject"]  # sent by no KafkaSource: no position of its own

    records = [record_from_http(h, b"{}", default_topic="moderation") for h in (first, second)]
    responses = [_client().post("/", data=b"{}", headers=h) for h in (first, second)]

    assert records[0].offset != records[1].offset
    assert [response.status_code for response in responses] == [200, 200]
    assert len(services.db.state.letters) == 2


def test_a_source_without_a_hash_names_no_topic_and_falls_back_to_the_configured_one():
    # KafkaSource puts the topic after a `#`: a source without one names no topic.
    record = record_from_http(
        _binary_headers(1, **{"ce-source": "orders"}), b"{}", default_topic="moderation"
    )

    assert record.topic == "moderation"


def test_an_extension_named_just_the_header_prefix_gives_no_header():
    # `kafkaheader` alone is the prefix with no name after it: no Kafka header to pass on.
    headers = _binary_headers(1, **{"ce-kafkaheader": "v", "ce-kafkaheadertrace": "t"})

    record = record_from_http(headers, b"{}", default_topic="moderation")

    assert record.headers == (("trace", b"t"),)


@pytest.mark.parametrize("source", ["/x#moder\x00ation", "/x#", "/x#" + "t" * 250, "/x#a b"])
def test_a_source_naming_no_legal_topic_falls_back_to_the_configured_one(source):
    record = record_from_http(
        _binary_headers(1, **{"ce-source": source}), b"{}", default_topic="moderation"
    )

    assert record.topic == "moderation"


@pytest.mark.parametrize(
    "fields",
    [b'"key": "\\ud800", "data": "{}"', b'"kafkaheadertrace": "\\ud800", "data": "{}"'],
    ids=["key", "kafka-header"],
)
def test_a_lone_surrogate_in_a_structured_event_is_dead_lettered_not_a_500(services, fields):
    # JSON allows "\ud800"; UTF-8 has no encoding of it. The record is malformed ("{}"
    # names no task) and must reach the DLQ, not come back for good as a 500.
    envelope = (
        b'{"specversion": "1.0", "type": "t", "source": "s#moderation", "id": "1",'
        b' "subject": "partition:0#5", ' + fields + b"}"
    )

    response = _client().post(
        "/", data=envelope, headers={"content-type": "application/cloudevents+json"}
    )

    assert response.status_code == 200, response.get_data(as_text=True)
    (letter,) = services.publisher.on_topic("moderation_dlq")
    assert dict(letter.headers)["x-exception-type"] == b"MalformedMessage"


def test_an_event_id_with_a_lone_surrogate_and_no_kafka_position_is_dead_lettered(services):
    # Without a subject the record's position is derived from the id, as bytes.
    envelope = b'{"specversion": "1.0", "type": "t", "source": "s", "id": "\\ud800", "data": "{}"}'

    response = _client().post(
        "/", data=envelope, headers={"content-type": "application/cloudevents+json"}
    )

    assert response.status_code == 200, response.get_data(as_text=True)
    assert len(services.publisher.on_topic("moderation_dlq")) == 1


def _stopping(seconds: float) -> None:
    raise ShutdownRequested()


def test_a_pushed_record_left_unfinished_gets_a_json_500_for_the_platform_to_redeliver(services):
    """The instance is stopped while the record waits out a database outage: a 200 would
    tell the platform the record is durable, and nothing would ever bring the task on."""
    with services.db.transaction() as tx:
        task_id = tx.create_task_for_existing_ad(1)
    _, value = encode_task_message(task_id, 1)
    services.db.unavailable_for = 9
    services.sleeper = _stopping

    response = _client().post("/", data=value, headers=_binary_headers(8))

    detail = assert_json_error(response, 500)
    assert detail == "Internal server error: the record was not processed"
    assert services.db.state.tasks[task_id].status == "pending"


def test_a_binary_events_non_ascii_key_and_header_reach_the_letter_byte_for_byte(services):
    # A Kafka key and header value in UTF-8, sent raw in the HTTP headers (as Knative's
    # Java dispatcher does): a WSGI server (gunicorn, werkzeug) hands each header over
    # decoded as latin-1 (PEP 3333), so these strings are what the function sees.
    key, header = "clé".encode(), "café".encode()
    headers = _binary_headers(
        12,
        **{"ce-key": key.decode("latin-1"), "ce-kafkaheadertrace": header.decode("latin-1")},
    )

    response = _client().post("/", data=b"not json", headers=headers)

    assert response.status_code == 200, response.get_data(as_text=True)
    (letter,) = services.publisher.on_topic("moderation_dlq")
    assert letter.key == key
    assert dict(letter.headers)["trace"] == header


def test_a_structured_events_text_data_is_the_record_value_not_its_json_quoting(services):
    # CloudEvents JSON format 3.1: with a datacontenttype that is not JSON, `data` holds
    # the payload as a JSON string; the payload is the string, not its JSON text.
    with services.db.transaction() as tx:
        task_id = tx.create_task_for_existing_ad(1)
    _, value = encode_task_message(task_id, 1)
    envelope = json.dumps(
        {
            "specversion": "1.0",
            "type": "dev.knative.kafka.event",
            "source": SOURCE,
            "id": "partition:0/offset:13",
            "subject": "partition:0#13",
            "datacontenttype": "text/plain",
            "data": value.decode(),
        }
    ).encode()

    response = _client().post(
        "/", data=envelope, headers={"content-type": "application/cloudevents+json"}
    )

    assert response.status_code == 200, response.get_data(as_text=True)
    assert services.publisher.on_topic("moderation_dlq") == []
    assert services.db.state.tasks[task_id].status == "completed"
