"""What the service code needs of a model and of a publisher: the real ones (`shared.model`,
`shared.kafka.publisher`) and the tests' fakes both fit these."""

from __future__ import annotations

from typing import Protocol

from shared.domain import Ad, BatchVerdicts, Verdict
from shared.kafka.record import OutgoingRecord


class Model(Protocol):
    version: str
    threshold: float

    def predict(self, ads: list[Ad]) -> list[Verdict]: ...

    def predict_batch(self, ads: list[Ad]) -> BatchVerdicts: ...


class ModelSource(Protocol):
    def get(self) -> Model: ...

    def loaded(self) -> Model | None: ...


class Publisher(Protocol):
    def publish(self, records: list[OutgoingRecord]) -> None: ...

    def ping(self, timeout_s: float = 2.0) -> None: ...

    def close(self, timeout_s: float = 5.0) -> None: ...
