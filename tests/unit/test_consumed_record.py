"""Copying a confluent-kafka Message into a ConsumedRecord, whatever its headers hold."""

from __future__ import annotations

import pytest

from shared.kafka.record import ConsumedRecord


class _Message:
    """The Message methods `from_message` calls; `headers()` as confluent-kafka gives it."""

    def __init__(self, headers) -> None:
        self._headers = headers

    def headers(self):
        if isinstance(self._headers, Exception):
            raise self._headers
        return self._headers

    def topic(self) -> str:
        return "moderation"

    def partition(self) -> int:
        return 2

    def offset(self) -> int:
        return 41

    def key(self) -> bytes:
        return b"7"

    def value(self) -> bytes:
        return b'{"task_id":1,"item_id":7}'


def test_headers_are_copied_with_a_missing_value_as_empty_bytes():
    record = ConsumedRecord.from_message(_Message([("trace", b"abc"), ("empty", None)]))

    assert record == ConsumedRecord(
        "moderation", 2, 41, b"7", b'{"task_id":1,"item_id":7}', (("trace", b"abc"), ("empty", b""))
    )


@pytest.mark.parametrize(
    "error",
    [
        # What confluent-kafka raises for a header name that is not UTF-8.
        SystemError("<built-in method headers> returned a result with an exception set"),
        UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
    ],
)
def test_headers_that_cannot_be_decoded_leave_the_record_without_them(error, caplog):
    record = ConsumedRecord.from_message(_Message(error))

    assert (record.offset, record.value, record.headers) == (41, b'{"task_id":1,"item_id":7}', ())
    assert "headers cannot be decoded" in caplog.text
