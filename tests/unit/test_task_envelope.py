"""The task message on `moderation`: one record at a time, and a canonical batch at once."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from shared.errors import MalformedMessage
from shared.kafka.envelope import (
    TaskMessage,
    encode_task_message,
    parse_canonical_batch,
    parse_task_message,
)
from shared.schemas import BIGINT_MAX


def _value(task_id: int, item_id: int) -> bytes:
    return encode_task_message(task_id, item_id)[1]


def test_a_batch_of_canonical_values_is_read_in_order() -> None:
    values = [_value(7, 70), _value(1, 10), _value(BIGINT_MAX, 1)]
    assert parse_canonical_batch(values) == ([7, 1, BIGINT_MAX], [70, 10, 1])


@pytest.mark.parametrize(
    "odd_one",
    [
        None,
        b"",
        b'{"task_id": 1, "item_id": 2}',  # valid JSON, not our exact form
        b'{"item_id":2,"task_id":1}',
        b'{"task_id":01,"item_id":2}',
        b'{"task_id":1,"item_id":2}\n',
        b'{"task_id":1,"item_id":2}\n{"task_id":3,"item_id":4}',
        b'{"task_id":1,"item_id":2}{"task_id":3,"item_id":4}',
        _value(BIGINT_MAX + 1, 2),
        _value(1, 10**19 - 1),
    ],
)
def test_one_value_out_of_the_canonical_form_sends_the_whole_batch_the_slow_way(
    odd_one: bytes | None,
) -> None:
    assert parse_canonical_batch([_value(1, 2), odd_one, _value(3, 4)]) is None


@settings(deadline=None)  # a loaded machine's pause is not a failure
@given(st.integers(1, 10**19 - 1), st.integers(1, 10**19 - 1))
@example(BIGINT_MAX + 1, 1)
@example(1, BIGINT_MAX + 1)
@example(BIGINT_MAX, BIGINT_MAX)
def test_a_value_in_our_own_form_with_an_id_past_bigint_is_malformed(
    task_id: int, item_id: int
) -> None:
    """Our form's digits reach 10**19 - 1, past PostgreSQL's BIGINT: such a record cannot
    name a task, and passed as one it would fail each of its batch's statements, retried
    as a temporary error for good, instead of going to the DLQ at once."""
    value = _value(task_id, item_id)
    if max(task_id, item_id) <= BIGINT_MAX:
        assert parse_task_message(value) == TaskMessage(task_id, item_id)
    else:
        with pytest.raises(MalformedMessage, match="less than or equal to 9223372036854775807"):
            parse_task_message(value)


def test_a_value_that_is_not_bytes_sends_the_batch_the_slow_way() -> None:
    assert parse_canonical_batch([_value(1, 2), '{"task_id":3,"item_id":4}']) is None  # type: ignore[list-item]


def test_an_empty_batch_is_not_a_canonical_one() -> None:
    assert parse_canonical_batch([]) is None


def _one_by_one(values: list[bytes]) -> tuple[list[int], list[int]] | None:
    try:
        messages = [parse_task_message(value) for value in values]
    except MalformedMessage:
        return None
    return [m.task_id for m in messages], [m.item_id for m in messages]


_ids = st.integers(1, BIGINT_MAX)


@settings(deadline=None)  # a loaded machine's pause is not a failure
@given(st.lists(st.tuples(_ids, _ids), min_size=1, max_size=6))
def test_any_batch_of_values_we_encoded_is_read_the_fast_way(pairs: list[tuple[int, int]]) -> None:
    # The property below holds of a batch reading that gives up on everything; this one
    # does not.
    values = [_value(task_id, item_id) for task_id, item_id in pairs]
    assert parse_canonical_batch(values) == ([t for t, _ in pairs], [i for _, i in pairs])


_pieces = st.sampled_from([b"\n", b"{", b"}", b",", b'"task_id":', b'"item_id":', b"1", b"0", b" "])
_canonical_values = st.builds(_value, _ids, _ids)
_values = st.one_of(
    _canonical_values,
    _canonical_values.map(lambda value: value + b"\n"),
    st.lists(_pieces, max_size=12).map(b"".join),
    st.lists(_canonical_values, min_size=2, max_size=3).map(b"\n".join),
)


@settings(deadline=None)  # a loaded machine's pause is not a failure
@given(st.lists(_values, min_size=1, max_size=6))
def test_the_batch_reading_never_disagrees_with_reading_one_by_one(values: list[bytes]) -> None:
    batch = parse_canonical_batch(values)
    if batch is not None:
        # Anything the batch reading accepts, each record's own parse reads the same way.
        assert batch == _one_by_one(values)
        assert all(isinstance(parse_task_message(v), TaskMessage) for v in values)
