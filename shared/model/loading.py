"""Loading a model from MODEL_URI, once per process and again after a failure.

`load_model` fetches the card, refuses a wrong scikit-learn version or signals other
than the code computes before fetching the artifact, reads the artifact safely
(`artifact.read_pipeline`), compiles the fast scorer and checks it against the pipeline
on `probes.probe_batches()`.

A failed load is not retried by every caller in turn: an unreachable S3 endpoint can
take a load tens of seconds to fail, and callers queued behind it would each wait for
all the loads before theirs. The failure is remembered for RETRY_FAILED_LOAD_S, and
a caller waits at most LOAD_WAIT_S for another thread's load; both answer at once
with ModelUnavailable (a 503 with Retry-After, a retry in the consumer).
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from shared.errors import ModelUnavailable
from shared.model.card import CARD_FILE, InvalidCard, ModelCard
from shared.model.features import SIGNAL_FEATURES
from shared.model.model import ModerationModel
from shared.model.probes import probe_batches
from shared.model.storage import storage_for

log = logging.getLogger(__name__)


def load_model(uri: str, *, s3_client: Any = None) -> ModerationModel:
    """The model at `uri` (a directory or s3://bucket/prefix); raise ModelUnavailable."""
    # Here, not at the top: these bring in scikit-learn and skops (1.5-3 s), which a
    # process that builds a ModelLoader but never loads a model must not pay for.
    from shared.model.artifact import check_sklearn_version, read_pipeline
    from shared.model.compiler import IncompatiblePipeline, check_agreement, compile_scorer

    storage = storage_for(uri, s3_client)
    try:
        card = ModelCard.from_json(storage.read(CARD_FILE))
    except InvalidCard as error:
        raise ModelUnavailable(f"{uri}: {error}") from error
    except RecursionError:
        raise ModelUnavailable(f"{uri}: the model card is JSON nested too deeply") from None
    check_sklearn_version(card)
    _check_signals(card)
    pipeline = read_pipeline(card, storage.read(card.artifact_file))
    try:
        scorer = compile_scorer(pipeline)
        for batch in probe_batches():
            check_agreement(scorer, pipeline, batch)
    except IncompatiblePipeline as error:
        raise ModelUnavailable(f"refusing model {card.version}: {error}") from error
    except Exception as error:
        # Its hash matched its card, but what it holds is not a fitted pipeline of the
        # expected shape (an unfitted one, say): as unusable as a missing artifact.
        raise ModelUnavailable(
            f"refusing model {card.version}: {type(error).__name__}: {error}"
        ) from error
    return ModerationModel(card, scorer)


def _check_signals(card: ModelCard) -> None:
    """A model scores the signals as the code that trained it computed them: one trained
    on others (uncapped lengths, say) would read every ad through numbers it never saw."""
    trained_on = card.features.get("signals")
    if trained_on != list(SIGNAL_FEATURES):
        raise ModelUnavailable(
            f"refusing model {card.version}: it was trained on the signals {trained_on},"
            f" and this code computes {list(SIGNAL_FEATURES)}; train it again"
            " (python -m shared.model train)"
        )


# How long a failed load answers for itself before the next caller tries again.
RETRY_FAILED_LOAD_S = 5.0
# How long a caller waits for another thread's load before answering unavailable.
LOAD_WAIT_S = 30.0


class ModelLoader:
    """Loads on the first `get()`, then serves the cached model; a failure is retried next call."""

    def __init__(
        self,
        uri: str,
        *,
        load: Callable[[str], ModerationModel] = load_model,
        clock: Callable[[], float] = time.monotonic,
        retry_failed_load_s: float = RETRY_FAILED_LOAD_S,
    ) -> None:
        self._uri = uri
        self._load = load
        self._clock = clock
        # No longer than the caller's own retry wait, or its retries would all be
        # answered from here without a load (the consumer's first wait is 5 s).
        self._retry_failed_load_s = retry_failed_load_s
        self._lock = threading.Lock()
        self._model: ModerationModel | None = None
        self._failure: tuple[ModelUnavailable, float] | None = None  # (error, when)

    def get(self) -> ModerationModel:
        model = self._model
        if model is not None:
            return model
        self._raise_recent_failure()
        # One thread loads while the others wait for it, rather than all loading at once;
        # once a load has failed, a caller does not queue behind the next attempt.
        failure = self._failure
        if failure is not None:
            if not self._lock.acquire(blocking=False):
                raise _again(failure[0])
        elif not self._lock.acquire(timeout=LOAD_WAIT_S):
            raise ModelUnavailable(f"the model is still loading after {LOAD_WAIT_S:g} s")
        try:
            if self._model is None:
                self._raise_recent_failure()  # the load this caller waited for failed
                try:
                    self._model = self._load(self._uri)
                except ModelUnavailable as error:
                    # Without its traceback, which holds this caller's frames (its request).
                    self._failure = (_again(error), self._clock())
                    raise
                self._failure = None
                log.info("model loaded", extra={"version": getattr(self._model, "version", None)})
                # The loaded model's objects live as long as the process: freezing them
                # keeps every later full garbage collection from walking them again.
                gc.freeze()
            return self._model
        finally:
            self._lock.release()

    def _raise_recent_failure(self) -> None:
        failure = self._failure
        if failure is not None and self._clock() - failure[1] < self._retry_failed_load_s:
            raise _again(failure[0])

    def loaded(self) -> ModerationModel | None:
        """The model if it is loaded, without loading it."""
        return self._model


def _again(failure: ModelUnavailable) -> ModelUnavailable:
    """The remembered failure as a new exception. Raising the one object again would add
    each caller's frames to its traceback, and with them every request's body, until the
    next load attempt replaced it."""
    return ModelUnavailable(str(failure))
