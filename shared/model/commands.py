"""What `python -m shared.model train` and `evaluate` do, as functions that return their results."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from tqdm import tqdm

from shared.model.artifact import save_model
from shared.model.card import ModelCard
from shared.model.compiler import IncompatiblePipeline
from shared.model.dataset import InvalidDataset, check_enough_to_train, read_labelled_csv
from shared.model.evaluation import classification_metrics, format_metrics
from shared.model.loading import load_model
from shared.model.synthetic import LabelledAds, generate_ads
from shared.model.training import model_date, split_holdout, train_model

EVALUATION_BATCH = 1_000


class MissingEvaluationData(ValueError):
    """The model was trained on a user's file, so `evaluate` cannot rebuild its holdout."""


@dataclass(frozen=True, slots=True)
class Evaluation:
    version: str
    data: str
    metrics: dict[str, Any]


def train(
    out: Path,
    data_file: Path | None,
    *,
    seed: int,
    size: int,
    date: str | None,
    progress: bool,
    report: TextIO,
) -> ModelCard:
    """Train on `data_file` (or synthetic ads), save to `out`, print held-out metrics."""
    if data_file:
        data = read_labelled_csv(data_file)
        check_enough_to_train(data, data_file)
    else:
        data = generate_ads(size, seed)
    version_date = model_date(data, date)
    started = time.perf_counter()
    try:
        trained = train_model(data, date=version_date, progress=progress)
    except IncompatiblePipeline:
        raise  # the fast scorer disagreeing with the pipeline: our bug, with its traceback
    except ValueError as error:
        if not data_file:
            raise  # the generator's ads always train: a bug, with its traceback
        # scikit-learn's word on ads it cannot fit ("After pruning, no terms remain").
        raise InvalidDataset(f"{data_file.name}: cannot train on these ads: {error}") from None
    card = save_model(out, trained.pipeline, trained.draft)
    seconds = time.perf_counter() - started
    ours, seed = card.metrics["holdout"], card.baseline["metrics"]["holdout"]
    report.write(
        f"model {card.version} saved to {out} in {seconds:.1f} s\n"
        f"  holdout, ours (threshold {card.decision_threshold:.3f}): {format_metrics(ours)}\n"
        f"  holdout, seed baseline:          {format_metrics(seed)}\n"
    )
    return card


def evaluate(
    model_uri: str, data_file: Path | None, *, progress: bool, report: TextIO
) -> Evaluation:
    """Score `data_file` (or the model's own synthetic holdout) with the served scorer."""
    model = load_model(model_uri)
    if data_file:
        data, described = read_labelled_csv(data_file), data_file.name
        ads, labels = data.ads, np.asarray(data.labels)
    else:
        ads, labels, described = _training_holdout(model.card)
    batches = range(0, len(ads), EVALUATION_BATCH)
    probabilities = np.concatenate(
        [
            model.probabilities(ads[start : start + EVALUATION_BATCH])
            for start in tqdm(
                batches, desc="scoring", unit="batch", disable=None if progress else True
            )
        ]
        or [np.empty(0)]
    )
    metrics = classification_metrics(labels, probabilities, model.threshold)
    report.write(f"model {model.version} on {described}: {format_metrics(metrics)}\n")
    return Evaluation(model.version, described, metrics)


def _training_holdout(card: ModelCard) -> tuple[list[Any], np.ndarray, str]:
    source = card.training_data if isinstance(card.training_data, dict) else {}
    if source.get("kind") != "synthetic":
        trained_on = source.get("file", "data its card does not name")
        raise MissingEvaluationData(
            f"model {card.version} was trained on {trained_on}: pass --data FILE.csv"
        )
    try:
        data: LabelledAds = generate_ads(int(source["size"]), int(source["seed"]))
        fraction, split_seed = float(source["holdout_fraction"]), int(source["split_seed"])
        _, holdout = split_holdout(data, fraction, split_seed)
    except (KeyError, TypeError, ValueError, OverflowError) as error:
        raise MissingEvaluationData(
            f"model {card.version}: its card's training_data cannot rebuild its holdout"
            f" ({type(error).__name__}: {error}): pass --data FILE.csv"
        ) from None
    described = f"its synthetic holdout (seed {source['seed']}, {len(holdout)} ads)"
    return [data.ads[i] for i in holdout], np.asarray(data.labels)[holdout], described
