"""The task message on the `moderation` topic: `{"task_id": N, "item_id": N}`, keyed by item_id.

Parsing is strict and says exactly what is wrong, because its message becomes the
DLQ reason an operator reads.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from itertools import chain
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict, ValidationError

from shared.errors import MalformedMessage
from shared.schemas import BIGINT_MAX, DbId

# A task message is two small integers; anything this large is not one of ours.
MAX_ENVELOPE_BYTES = 4096


class TaskMessage(NamedTuple):
    """A parsed, valid task message (a tuple: the consumer makes one per record)."""

    task_id: int
    item_id: int


class _TaskMessageSchema(BaseModel):
    """The strict validation of a task message that is not in our canonical form."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    task_id: DbId
    item_id: DbId


def encode_task_message(task_id: int, item_id: int) -> tuple[bytes, bytes]:
    """The (key, value) to publish; the key keeps one ad's tasks in one partition, in order."""
    value = json.dumps({"task_id": task_id, "item_id": item_id}, separators=(",", ":"))
    return str(item_id).encode(), value.encode()


# Exactly what `encode_task_message` writes. Matching it skips JSON and pydantic for
# the records we produced ourselves; anything else takes the full, strict path below.
_CANONICAL_FORM = rb'\{"task_id":([1-9][0-9]{0,18}),"item_id":([1-9][0-9]{0,18})\}'
_CANONICAL = re.compile(_CANONICAL_FORM)
# A batch of them joined one per line. A value holding a newline makes more lines
# than values, which `parse_canonical_batch` counts.
_CANONICAL_LINES = re.compile(rb"(?:" + _CANONICAL_FORM + rb"\n)*")


def parse_canonical_batch(values: Sequence[bytes | None]) -> tuple[list[int], list[int]] | None:
    """(task_ids, item_ids) of a batch whose every value is exactly what
    `encode_task_message` writes, read by two regexes over the joined batch; None when
    any value is not, and the caller parses them one by one with `parse_task_message`."""
    if not values or None in values:
        return None
    try:
        joined = b"\n".join(values) + b"\n"  # type: ignore[arg-type]  # no None, checked above
    except TypeError:
        return None  # a value that is not bytes: the per-record path says what it is
    if _CANONICAL_LINES.fullmatch(joined) is None:
        return None
    found = _CANONICAL.findall(joined)
    if len(found) != len(values):
        return None  # a value held a newline
    numbers = list(map(int, chain.from_iterable(found)))
    if max(numbers) > BIGINT_MAX:
        return None
    return numbers[0::2], numbers[1::2]


def parse_task_message(value: bytes | None) -> TaskMessage:
    if value is not None and (match := _CANONICAL.fullmatch(value)):
        task_id, item_id = int(match[1]), int(match[2])
        if task_id <= BIGINT_MAX and item_id <= BIGINT_MAX:
            return TaskMessage(task_id, item_id)
    if value is None or value == b"":
        raise MalformedMessage("empty value: expected a JSON object with task_id and item_id")
    if len(value) > MAX_ENVELOPE_BYTES:
        raise MalformedMessage(
            f"value of {len(value)} bytes is over the {MAX_ENVELOPE_BYTES}-byte limit"
        )
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as error:
        raise MalformedMessage(f"value is not valid UTF-8: {error}") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise MalformedMessage(f"value is not JSON: {error}") from None
    except RecursionError:
        # `[[[[...]]]]` a few thousand deep fits in the size limit but not in the stack.
        raise MalformedMessage("value is JSON nested too deeply to be a task message") from None
    if not isinstance(document, dict):
        raise MalformedMessage(f"expected a JSON object, got {type(document).__name__}")
    try:
        valid = _TaskMessageSchema.model_validate(document)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in issue['loc'])}: {issue['msg']}"
            for issue in error.errors()
        )
        raise MalformedMessage(f"invalid task message: {problems}") from None
    return TaskMessage(valid.task_id, valid.item_id)
