"""Scoring a batch's ads: one vectorised model call, and the ads one by one when that
call fails, so that one ad the model refuses or chokes on does not fail its neighbours."""

from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np

from shared.cancellation import ShutdownRequested
from shared.db.tasks import TaskForProcessing
from shared.domain import BatchVerdicts
from shared.errors import InvalidFeatures, ModelFailedOnAd, PermanentError, TemporaryError
from shared.moderation.batch_work import TaskRecord
from shared.ports import Model, ModelSource

log = logging.getLogger(__name__)


class Scored(NamedTuple):
    task_ids: list[int]
    verdicts: BatchVerdicts  # in the order of task_ids


Refusals = list[tuple[TaskRecord, TaskForProcessing, PermanentError]]


def score_ads(
    source: ModelSource, to_score: list[tuple[TaskRecord, TaskForProcessing]]
) -> tuple[Scored | None, Refusals, Exception | None]:
    """One vectorised call; if the model refuses or fails the batch, the ads one by one.

    (verdicts, ads refused for good, the model's own failure): the last is not None when
    no ad scored, and then every ad not refused is to be retried like an outage."""
    if not to_score:
        return None, [], None
    model = source.get()  # only now: a batch with nothing to score needs no model
    try:
        verdicts = _checked(model.predict_batch([row.ad for _, row in to_score]))
        return Scored([row.id for _, row in to_score], verdicts), [], None
    except (TemporaryError, ShutdownRequested):
        raise
    except Exception as error:  # InvalidFeatures, or a bug the model has on some ad
        return _score_one_by_one(model, to_score, batch_error=error)


def _score_one_by_one(
    model: Model, to_score: list[tuple[TaskRecord, TaskForProcessing]], *, batch_error: Exception
) -> tuple[Scored | None, Refusals, Exception | None]:
    """What `score_ads` returns, from a model call per ad: after the batch's call failed."""
    task_ids: list[int] = []
    parts: list[BatchVerdicts] = []
    invalid: Refusals = []
    failed_on_ads = []
    for task, row in to_score:
        try:
            parts.append(_checked(model.predict_batch([row.ad])))
        except InvalidFeatures as error:
            invalid.append((task, row, error))
        except (TemporaryError, ShutdownRequested):
            raise
        except Exception as error:
            failed_on_ads.append((task, row, error))
        else:
            task_ids.append(row.id)
    if failed_on_ads and not parts:
        # Not one ad scored: the model itself is failing, not an input (a refusal says
        # nothing of that, being about an ad's fields). The refusals are settled; the rest
        # is retried on the schedule like an outage (`_attempt_batch` in batch.py).
        return None, invalid, failed_on_ads[0][2]
    if not failed_on_ads and not invalid and not isinstance(batch_error, InvalidFeatures):
        # Each ad scored alone, so the batch goes on, but every batch would cost a model
        # call per ad for as long as this lasts: it must show.
        log.error("the model failed on a batch, and on none of its ads alone", exc_info=batch_error)
    for task, row, error in failed_on_ads:
        # The others of the batch scored, so this ad is what the model chokes on: it is
        # failed and dead-lettered at once, and its neighbours complete.
        log.error(
            "the model failed on one ad of its batch",
            exc_info=error,
            extra={"task_id": task.task_id, "item_id": task.item_id},
        )
        reason = ModelFailedOnAd(f"the model failed on this ad: {type(error).__name__}: {error}")
        invalid.append((task, row, reason))
    scored = Scored(task_ids, BatchVerdicts.joined(parts, model.version)) if parts else None
    return scored, invalid, None


def _checked(verdicts: BatchVerdicts) -> BatchVerdicts:
    """The verdicts, or ValueError for a probability outside [0, 1] (NaN included): written,
    it would fail the CHECK on the column, and with it the UPDATE of the whole batch."""
    probability = verdicts.probability
    if not np.all((probability >= 0) & (probability <= 1)):  # NaN compares false
        raise ValueError("the model gave a probability outside [0, 1]")
    return verdicts
