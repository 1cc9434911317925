"""Loading a model from MODEL_URI, once per process and again after a failure.

`load_model` fetches the card, refuses a wrong scikit-learn version before fetching
the artifact, reads the artifact safely (`artifact.read_pipeline`), compiles the fast
scorer and checks it against the pipeline on `probes.probe_batches()`.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable
from typing import Any

from shared.errors import ModelUnavailable
from shared.model.artifact import check_sklearn_version, read_pipeline
from shared.model.card import CARD_FILE, InvalidCard, ModelCard
from shared.model.compiler import IncompatiblePipeline, check_agreement, compile_scorer
from shared.model.model import ModerationModel
from shared.model.probes import probe_batches
from shared.model.storage import storage_for


def load_model(uri: str, *, s3_client: Any = None) -> ModerationModel:
    """The model at `uri` (a directory or s3://bucket/prefix); raise ModelUnavailable."""
    storage = storage_for(uri, s3_client)
    try:
        card = ModelCard.from_json(storage.read(CARD_FILE))
    except InvalidCard as error:
        raise ModelUnavailable(f"{uri}: {error}") from error
    check_sklearn_version(card)
    pipeline = read_pipeline(card, storage.read(card.artifact_file))
    try:
        scorer = compile_scorer(pipeline)
        for batch in probe_batches():
            check_agreement(scorer, pipeline, batch)
    except IncompatiblePipeline as error:
        raise ModelUnavailable(f"refusing model {card.version}: {error}") from error
    return ModerationModel(card, scorer)


class ModelLoader:
    """Loads on the first `get()`, then serves the cached model; a failure is retried next call."""

    def __init__(self, uri: str, *, load: Callable[[str], ModerationModel] = load_model) -> None:
        self._uri = uri
        self._load = load
        self._lock = threading.Lock()
        self._model: ModerationModel | None = None

    def get(self) -> ModerationModel:
        model = self._model
        if model is not None:
            return model
        # One thread loads while the others wait for it, rather than all loading at once.
        with self._lock:
            if self._model is None:
                self._model = self._load(self._uri)
                # The loaded model's objects live as long as the process: freezing them
                # keeps every later full garbage collection from walking them again.
                gc.freeze()
            return self._model

    def ready(self) -> bool:
        """Whether `get()` returns a model now (loading it if needed) instead of raising."""
        try:
            self.get()
        except ModelUnavailable:
            return False
        return True
