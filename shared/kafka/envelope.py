"""The task message on the `moderation` topic: `{"task_id": N, "item_id": N}`, keyed by item_id.

Parsing is strict and says exactly what is wrong, because its message becomes the
DLQ reason an operator reads.
"""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict, ValidationError

from shared.errors import MalformedMessage
from shared.schemas import DbId

# A task message is two small integers; anything this large is not one of ours.
MAX_ENVELOPE_BYTES = 4096


class TaskMessage(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    task_id: DbId
    item_id: DbId


def encode_task_message(task_id: int, item_id: int) -> tuple[bytes, bytes]:
    """The (key, value) to publish; the key keeps one ad's tasks in one partition, in order."""
    value = json.dumps({"task_id": task_id, "item_id": item_id}, separators=(",", ":"))
    return str(item_id).encode(), value.encode()


def parse_task_message(value: bytes | None) -> TaskMessage:
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
    if not isinstance(document, dict):
        raise MalformedMessage(f"expected a JSON object, got {type(document).__name__}")
    try:
        return TaskMessage.model_validate(document)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in issue['loc'])}: {issue['msg']}"
            for issue in error.errors()
        )
        raise MalformedMessage(f"invalid task message: {problems}") from None
