"""The model card: the JSON file beside the artifact that says what the model is and how good.

Everything in it is derived from the training data and code, never from the clock or
the machine, so the same training gives the same card.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

CARD_FILE = "model_card.json"
ARTIFACT_FILE = "model.skops"
VERSION_PREFIX = "moderation"
SHORT_HASH_LENGTH = 8
# The card's layout, raised when a field changes meaning or one is added that the loader
# must obey. A card of a newer format is refused rather than half read: its new fields
# (a threshold per category, say) would be dropped without a word. Cards before the
# field are format 1.
CARD_FORMAT = 1


class InvalidCard(ValueError):
    """A model card that is not valid JSON or lacks a field the loader needs."""


@dataclass(frozen=True, slots=True)
class ModelCard:
    version: str
    created: str  # YYYY-MM-DD, see training.model_date
    sklearn_version: str
    artifact: dict[str, str]  # file, format, sha256, skops_version
    decision_threshold: float
    threshold_rule: str
    features: dict[str, Any]
    metrics: dict[str, Any]
    baseline: dict[str, Any]
    training_data: dict[str, Any]
    card_format: int = CARD_FORMAT

    @property
    def artifact_file(self) -> str:
        return self.artifact["file"]

    @property
    def artifact_sha256(self) -> str:
        return self.artifact["sha256"]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> ModelCard:
        try:
            fields = json.loads(text)
        except ValueError as error:
            raise InvalidCard(f"expected the model card to be JSON: {error}") from None
        if not isinstance(fields, dict):
            raise InvalidCard(
                f"expected the model card to be a JSON object, got {type(fields).__name__}"
            )
        fields.setdefault("card_format", 1)
        missing = [name for name in cls.__dataclass_fields__ if name not in fields]
        if missing:
            raise InvalidCard(f"model card lacks {', '.join(missing)}")
        card = cls(**{name: fields[name] for name in cls.__dataclass_fields__})
        _check_types(card)
        return card


@dataclass(frozen=True, slots=True)
class CardDraft:
    """Everything training knows; saving the artifact adds its version and hash."""

    created: str
    sklearn_version: str
    decision_threshold: float
    threshold_rule: str
    features: dict[str, Any]
    metrics: dict[str, Any]
    baseline: dict[str, Any]
    training_data: dict[str, Any]

    def complete(self, version: str, artifact: dict[str, str]) -> ModelCard:
        return ModelCard(version=version, artifact=artifact, **asdict(self))


def model_version(date: str, artifact_sha256: str) -> str:
    """`moderation-<date>-<short hash of the artifact>`: the same bytes, the same version."""
    return f"{VERSION_PREFIX}-{date}-{artifact_sha256[:SHORT_HASH_LENGTH]}"


def _check_types(card: ModelCard) -> None:
    card_format = card.card_format
    if isinstance(card_format, bool) or not isinstance(card_format, int):
        raise InvalidCard(f"expected card_format to be a whole number, got {card_format!r}")
    if card_format != CARD_FORMAT:
        raise InvalidCard(
            f"model card format {card_format} is not the one this service reads"
            f" ({CARD_FORMAT}): run the service version that wrote it, or retrain"
        )
    if not isinstance(card.version, str) or not isinstance(card.sklearn_version, str):
        raise InvalidCard("expected version and sklearn_version to be strings")
    threshold = card.decision_threshold
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, int | float)
        or not 0 <= threshold <= 1
    ):
        raise InvalidCard(f"expected decision_threshold between 0 and 1, got {threshold!r}")
    if not isinstance(card.features, dict):
        raise InvalidCard(f"expected features to be an object, got {card.features!r}")
    artifact = card.artifact
    if not isinstance(artifact, dict) or not all(
        isinstance(artifact.get(key), str) for key in ("file", "sha256", "format")
    ):
        raise InvalidCard("expected artifact to name its file, format and sha256")
    if artifact["format"] != "skops":
        raise InvalidCard(f"expected artifact format 'skops', got {artifact['format']!r}")
    if "/" in artifact["file"] or "\\" in artifact["file"] or artifact["file"].startswith("."):
        raise InvalidCard(
            f"expected the artifact file to be a plain name, got {artifact['file']!r}"
        )
    expected_version = model_version(str(card.created), artifact["sha256"])
    if card.version != expected_version:
        # Every verdict carries this version: it must name the very artifact that made it.
        raise InvalidCard(
            f"expected version {expected_version!r} (its date and artifact hash), got"
            f" {card.version!r}"
        )
