"""Records on the `moderation` topic that are not task messages, each with the reason the
consumer must give when it dead-letters it (a fragment of `x-exception-message`)."""

from __future__ import annotations

import json
from dataclasses import dataclass

BIGINT_MAX = 2**63 - 1
MALFORMED = "MalformedMessage"
NOT_FOUND = "TaskNotFound"


@dataclass(frozen=True, slots=True)
class PoisonRecord:
    name: str
    key: bytes | None
    value: bytes | None
    reason: str
    exception_type: str = MALFORMED


def _json(document: object) -> bytes:
    return json.dumps(document).encode()


def _task(task_id: object, item_id: object = 1) -> bytes:
    return _json({"task_id": task_id, "item_id": item_id})


def _digits(count: int) -> bytes:
    """A task_id literal of `count` nines (Python's int() refuses over 4300 digits)."""
    return b'{"task_id": ' + b"9" * count + b', "item_id": 1}'


NOT_JSON = "value is not JSON"
NOT_UTF8 = "value is not valid UTF-8"
TOO_BIG = "over the 4096-byte limit"
EMPTY = "empty value"
REQUIRED = "Field required"
NOT_INT = "Input should be a valid integer"
NOT_POSITIVE = "Input should be greater than 0"
OVER_BIGINT = f"Input should be less than or equal to {BIGINT_MAX}"

CORPUS: tuple[PoisonRecord, ...] = (
    # Not JSON at all.
    PoisonRecord("plain text", b"1", b"not json", NOT_JSON),
    PoisonRecord("truncated object", None, b'{"task_id": 1, "item_id": ', NOT_JSON),
    PoisonRecord("single-quoted keys", b"2", b"{'task_id': 1, 'item_id': 1}", NOT_JSON),
    PoisonRecord("trailing comma", None, b'{"task_id": 1, "item_id": 1,}', NOT_JSON),
    PoisonRecord("xml", b"3", b"<task id='1' item='1'/>", NOT_JSON),
    PoisonRecord("json then garbage", None, b'{"task_id": 1, "item_id": 1} x', NOT_JSON),
    PoisonRecord("two json objects", b"4", b'{"task_id": 1}{"item_id": 1}', NOT_JSON),
    PoisonRecord("utf-8 bom before json", None, b'\xef\xbb\xbf{"task_id":1,"item_id":1}', NOT_JSON),
    PoisonRecord("nul bytes", b"5", b"\x00\x00\x00\x00", NOT_JSON),
    PoisonRecord("control characters", None, bytes(range(1, 32)), NOT_JSON),
    PoisonRecord("whitespace only", b"6", b" \t\r\n ", NOT_JSON),
    PoisonRecord("bare word", None, b"undefined", NOT_JSON),
    # Not UTF-8.
    PoisonRecord("invalid utf-8 bytes", b"1", b"\xff\xfe\xfd", NOT_UTF8),
    PoisonRecord(
        "invalid utf-8 inside json", None, b'{"task_id": "\xc3\x28", "item_id": 1}', NOT_UTF8
    ),
    PoisonRecord("overlong utf-8", b"\xff\xfe", b"\xc0\xaf", NOT_UTF8),
    PoisonRecord("utf-8 encoded surrogate", None, b"\xed\xa0\x80", NOT_UTF8),
    PoisonRecord(
        "latin-1 text", b"7", b'{"task_id": 1, "item_id": 1, "name": "caf\xe9"}', NOT_UTF8
    ),
    PoisonRecord("utf-16 json", None, '{"task_id": 1, "item_id": 1}'.encode("utf-16"), NOT_UTF8),
    # Empty.
    PoisonRecord("empty value", b"8", b"", EMPTY),
    PoisonRecord("null value (tombstone)", b"9", None, EMPTY),
    PoisonRecord("null key and null value", None, None, EMPTY),
    # JSON, but not an object.
    PoisonRecord("json null", None, b"null", "expected a JSON object, got NoneType"),
    PoisonRecord("json array", b"1", b"[1, 2]", "expected a JSON object, got list"),
    PoisonRecord("array of a task", None, _json([{"task_id": 1, "item_id": 1}]), "got list"),
    PoisonRecord("json string", b"2", b'"task"', "expected a JSON object, got str"),
    PoisonRecord("json integer", None, b"42", "expected a JSON object, got int"),
    PoisonRecord("json float", b"3", b"3.14", "expected a JSON object, got float"),
    PoisonRecord("json boolean", None, b"true", "expected a JSON object, got bool"),
    # Fields missing or misnamed.
    PoisonRecord("empty object", b"4", b"{}", REQUIRED),
    PoisonRecord("no item_id", None, _json({"task_id": 1}), f"item_id: {REQUIRED}"),
    PoisonRecord("no task_id", b"5", _json({"item_id": 1}), f"task_id: {REQUIRED}"),
    PoisonRecord("camelCase fields", None, _json({"taskId": 1, "itemId": 1}), REQUIRED),
    PoisonRecord("upper-case fields", b"6", _json({"TASK_ID": 1, "ITEM_ID": 1}), REQUIRED),
    PoisonRecord("emoji keys", None, _json({"\U0001f6b2": 1, "\u00e9": 2}), REQUIRED),
    PoisonRecord("3000-character key", b"7", _json({"k" * 3000: 1}), REQUIRED),
    # Wrong types.
    PoisonRecord("ids as strings", None, _task("1", "1"), NOT_INT),
    PoisonRecord("unicode-escaped digit", b"8", b'{"task_id": "\\u0031", "item_id": 1}', NOT_INT),
    PoisonRecord("escaped lone surrogate", None, b'{"task_id": "\\ud800", "item_id": 1}', NOT_INT),
    PoisonRecord("escaped nul", b"9", b'{"task_id": "\\u0000", "item_id": 1}', NOT_INT),
    PoisonRecord("hex string id", None, _task("0x1F"), NOT_INT),
    PoisonRecord("integral float", b"1", _task(1.0), NOT_INT),
    PoisonRecord("fractional float", None, _task(1.5), NOT_INT),
    PoisonRecord("exponent literal", b"2", b'{"task_id": 1e3, "item_id": 1}', NOT_INT),
    PoisonRecord(
        "float overflowing to infinity", None, b'{"task_id": 1e400, "item_id": 1}', NOT_INT
    ),
    PoisonRecord("NaN", b"3", b'{"task_id": NaN, "item_id": 1}', NOT_INT),
    PoisonRecord("Infinity", None, b'{"task_id": 1, "item_id": -Infinity}', NOT_INT),
    PoisonRecord("boolean id", b"4", _task(True), NOT_INT),
    PoisonRecord("null id", None, _task(None), NOT_INT),
    PoisonRecord("array id", b"5", _task([1]), NOT_INT),
    PoisonRecord("nested object id", None, _task({"id": 1, "more": {"deeper": [None]}}), NOT_INT),
    PoisonRecord("nested garbage", b"6", _json({"task": {"task_id": 1, "item_id": 1}}), REQUIRED),
    PoisonRecord("50-level nesting", None, b'{"a":' * 50 + b"1" + b"}" * 50, REQUIRED),
    PoisonRecord("4000-character string id", b"7", _task("a" * 4000), NOT_INT),
    # Out of range.
    PoisonRecord("zero id", None, _task(0), NOT_POSITIVE),
    PoisonRecord("negative task_id", b"8", _task(-1), NOT_POSITIVE),
    PoisonRecord("negative item_id", None, _task(1, -(2**63)), NOT_POSITIVE),
    PoisonRecord("id just over bigint", b"9", _task(BIGINT_MAX + 1), OVER_BIGINT),
    PoisonRecord("huge id", None, _task(10**30), OVER_BIGINT),
    PoisonRecord("4000-digit id", b"1", _digits(4000), OVER_BIGINT),
    # Too large to be one of ours.
    PoisonRecord("5000-digit id", None, _digits(5000), TOO_BIG),
    PoisonRecord("padded past 4 KiB", b"2", _task(1) + b" " * 4096, TOO_BIG),
    PoisonRecord("1 MB value", None, b"x" * 1_000_000, TOO_BIG),
    # Just under the 1 MiB that the moderation topic takes.
    PoisonRecord("almost 1 MiB json string", b"3", _json("y" * (1024 * 1024 - 1024)), TOO_BIG),
    # Well-formed, but no such task.
    PoisonRecord("unknown task", b"4", _task(BIGINT_MAX), "Task not found", NOT_FOUND),
    PoisonRecord(
        "unknown task, odd key",
        b"\x00" * 10_000,
        _task(BIGINT_MAX - 1),
        "Task not found",
        NOT_FOUND,
    ),
)
