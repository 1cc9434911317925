"""The pydantic models of the HTTP API; handlers validate with them and /openapi.json is
generated from them, so the documentation cannot drift from what is enforced."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictStr
from pydantic_core import PydanticCustomError

from shared.db.tasks import TaskRow
from shared.domain import Ad, Verdict

BIGINT_MAX = 2**63 - 1
INTEGER_MAX = 2**31 - 1

# Ids are PostgreSQL BIGSERIALs: positive and within bigint.
DbId = Annotated[int, Field(gt=0, le=BIGINT_MAX)]


def _decimal_digits(value: object) -> object:
    """Ids in a query string or path are text: decimal digits and nothing else. Python's
    int() also reads `1_000`, `+10` and ` 10 `, and pydantic's lax int `10.000`, so a
    typo would name another ad instead of being refused."""
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        # PydanticCustomError, not ValueError, whose message pydantic prefixes with
        # "Value error, " before the client sees it; the type stays `value_error`.
        raise PydanticCustomError(
            "value_error", "expected a whole number in decimal digits, such as 42"
        )
    return value


TextDbId = Annotated[DbId, BeforeValidator(_decimal_digits)]

# Visible ASCII but the comma: the pattern /openapi.json documents.
_IDEMPOTENCY_KEY_PATTERN = r"^[!-+\--~]+$"


def _visible_ascii_without_commas(value: object) -> object:
    """The pattern's check, first, with a reason a client can act on: pydantic's own
    says only that the key should match `^[!-+\\--~]+$`."""
    if isinstance(value, str) and value and not re.fullmatch(_IDEMPOTENCY_KEY_PATTERN, value):
        raise PydanticCustomError(
            "value_error",
            "expected visible ASCII characters (a UUID, say) and no comma; a header sent"
            " twice arrives as one, its values joined by commas",
        )
    return value


TaskStatus = Literal["pending", "completed", "failed"]


class PredictRequest(BaseModel):
    """An ad as the caller has it. Strict: "abc" or "maybe" are not coerced."""

    model_config = ConfigDict(strict=True, extra="forbid")

    seller_id: DbId
    is_verified_seller: StrictBool
    item_id: DbId
    name: Annotated[StrictStr, Field(max_length=1_000)]
    description: Annotated[StrictStr, Field(max_length=20_000)]
    category: Annotated[int, Field(ge=0, le=INTEGER_MAX)]
    images_qty: Annotated[int, Field(ge=0, le=10)]

    def to_ad(self) -> Ad:
        return Ad(
            item_id=self.item_id,
            seller_id=self.seller_id,
            is_verified_seller=self.is_verified_seller,
            name=self.name,
            description=self.description,
            category=self.category,
            images_qty=self.images_qty,
        )


class ItemIdQuery(BaseModel):
    """`?item_id=N`: decimal digits, so `abc`, `1.5`, `1_000`, `+1`, 0, negatives and
    values beyond bigint are refused."""

    model_config = ConfigDict(extra="ignore")

    item_id: TextDbId


class AsyncPredictHeaders(BaseModel):
    """`Idempotency-Key`, optional: a retry of a request that sent one gets that request's
    task back instead of a second task, within the key's lifetime (IDEMPOTENCY_KEY_TTL_S).
    Visible ASCII, as a UUID is, and no comma: a
    header sent twice reaches the function as one, its values joined by commas."""

    model_config = ConfigDict(extra="ignore", populate_by_name=False)

    idempotency_key: (
        Annotated[
            StrictStr,
            Field(min_length=1, max_length=255, pattern=_IDEMPOTENCY_KEY_PATTERN),
            BeforeValidator(_visible_ascii_without_commas),
        ]
        | None
    ) = Field(default=None, alias="Idempotency-Key")


class TaskIdPath(BaseModel):
    task_id: TextDbId


class PredictResponse(BaseModel):
    item_id: int
    is_violation: bool
    probability: Annotated[float, Field(ge=0, le=1, description="P(violation)")]
    model_version: str

    @classmethod
    def from_verdict(cls, verdict: Verdict) -> PredictResponse:
        return cls(
            item_id=verdict.item_id,
            is_violation=verdict.is_violation,
            probability=verdict.probability,
            model_version=verdict.model_version,
        )


class AsyncPredictResponse(BaseModel):
    # Documented as the response it is: every field always present, defaults included.
    model_config = ConfigDict(
        json_schema_mode_override="serialization", json_schema_serialization_defaults_required=True
    )

    task_id: int
    status: Literal["pending"] = "pending"
    message: str = "Moderation request accepted"


class ModerationResultResponse(BaseModel):
    task_id: int
    item_id: int
    status: TaskStatus
    is_violation: bool | None
    probability: float | None
    model_version: str | None
    error: str | None
    attempts: int
    created_at: datetime
    processed_at: datetime | None

    @classmethod
    def from_task(cls, task: TaskRow) -> ModerationResultResponse:
        return cls(
            task_id=task.id,
            item_id=task.item_id,
            status=task.status,
            is_violation=task.is_violation,
            probability=task.probability,
            model_version=task.model_version,
            error=task.error_message,
            attempts=task.attempts,
            created_at=task.created_at,
            processed_at=task.processed_at,
        )


class RelaySweepResponse(BaseModel):
    published: int = Field(description="tasks and DLQ records this call published")


class ErrorResponse(BaseModel):
    detail: str | list[dict[str, object]]
