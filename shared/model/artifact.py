"""The artifact on disk: the fitted pipeline in skops format and its card, saved and read safely.

Reading refuses, before anything is deserialised: an artifact whose sha256 differs from
its card (corrupt, partly uploaded, or swapped), and a card whose scikit-learn
major.minor differs from the installed one. Deserialising goes through `skops.io` with
an explicit allow-list, so a tampered file cannot name a callable to run.

Every refusal is `ModelUnavailable`, a temporary error, on purpose: the ads are fine,
the deployment is not. An operator has to fix the artifact; until then the consumer
retries and HTTP answers 503, and the fixed artifact is picked up by the next load,
where a permanent error would have failed every ad for good. Note that the card is
not signed: the hash catches accidents, the allow-list is what stops code execution.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import sklearn
import skops
import skops.io
from sklearn.pipeline import Pipeline

from shared.errors import ModelUnavailable
from shared.model.canonical_skops import canonical_skops_bytes
from shared.model.card import ARTIFACT_FILE, CARD_FILE, CardDraft, ModelCard, model_version

# The only types outside skops' defaults (scikit-learn, numpy, scipy, builtins) that our
# pipeline holds: its two FunctionTransformer steps.
TRUSTED_TYPES = (
    "shared.model.features.signal_features",
    "shared.model.features.texts_of",
)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_model(directory: Path, pipeline: Pipeline, draft: CardDraft) -> ModelCard:
    """Write `model.skops` then `model_card.json` (last, so a card always has its artifact)."""
    data = canonical_skops_bytes(skops.io.dumps(pipeline))
    digest = sha256_hex(data)
    card = draft.complete(
        version=model_version(draft.created, digest),
        artifact={
            "file": ARTIFACT_FILE,
            "format": "skops",
            "sha256": digest,
            "skops_version": skops.__version__,
        },
    )
    directory.mkdir(parents=True, exist_ok=True)
    _write_atomically(directory / ARTIFACT_FILE, data)
    _write_atomically(directory / CARD_FILE, card.to_json().encode())
    return card


def read_pipeline(card: ModelCard, data: bytes) -> Pipeline:
    """The pipeline in `data`, after the hash, version and type checks; else ModelUnavailable."""
    digest = sha256_hex(data)
    if digest != card.artifact_sha256:
        raise ModelUnavailable(
            f"refusing model {card.version}: {card.artifact_file} has sha256 {digest}, "
            f"its card expects {card.artifact_sha256} (corrupt or tampered artifact)"
        )
    check_sklearn_version(card)
    try:
        untrusted = skops.io.get_untrusted_types(data=data)
    except Exception as error:  # any malformed file: zip, JSON or skops schema errors
        raise ModelUnavailable(f"could not read {card.artifact_file}: {error}") from error
    unexpected = sorted(set(untrusted) - set(TRUSTED_TYPES))
    if unexpected:
        raise ModelUnavailable(
            f"refusing model {card.version}: {card.artifact_file} holds types outside the "
            f"allow-list: {', '.join(unexpected)}"
        )
    try:
        pipeline = skops.io.loads(data, trusted=list(TRUSTED_TYPES))
    except Exception as error:  # the same: nothing in a refused file may escape unwrapped
        raise ModelUnavailable(f"could not load {card.artifact_file}: {error}") from error
    if not isinstance(pipeline, Pipeline):
        raise ModelUnavailable(
            f"expected {card.artifact_file} to hold a Pipeline, got {type(pipeline).__name__}"
        )
    return pipeline


def check_sklearn_version(card: ModelCard) -> None:
    """Refuse a card trained with another scikit-learn major.minor than the installed one."""
    if _major_minor(card.sklearn_version) != _major_minor(sklearn.__version__):
        raise ModelUnavailable(
            f"refusing model {card.version}: trained with scikit-learn {card.sklearn_version}, "
            f"installed is {sklearn.__version__}; retrain it or install the matching version"
        )


def _major_minor(version: str) -> tuple[str, ...]:
    return tuple(version.split(".")[:2])


def _write_atomically(path: Path, data: bytes) -> None:
    # A temporary name of its own, so that two savings into one folder at once cannot
    # rename each other's file away.
    handle, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.chmod(partial, 0o644)  # mkstemp's 0600 would hide the model from another account
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
