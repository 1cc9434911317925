"""Training: split, pick the threshold out-of-fold, fit ours and the seed's model, score both.

Every random choice is seeded, so the same data gives the same pipeline and card.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import numpy as np
import sklearn
from sklearn.base import clone
from sklearn.model_selection import StratifiedKFold, train_test_split
from sklearn.pipeline import Pipeline
from tqdm import tqdm

from shared.domain import Ad
from shared.model import features, synthetic
from shared.model import pipeline as pipelines
from shared.model.card import CardDraft
from shared.model.compiler import check_agreement, compile_scorer
from shared.model.evaluation import best_f1_threshold, classification_metrics
from shared.model.synthetic import LabelledAds

HOLDOUT_FRACTION = 0.25
SPLIT_SEED = 17
THRESHOLD_FOLDS = 3
THRESHOLD_RULE = (
    f"maximises F1 on {THRESHOLD_FOLDS}-fold out-of-fold predictions of the training split"
)


@dataclass(frozen=True, slots=True)
class TrainedModel:
    pipeline: Pipeline
    baseline: Pipeline
    draft: CardDraft
    holdout_ads: list[Ad]
    holdout_labels: np.ndarray


@dataclass(frozen=True, slots=True)
class _Fitted:
    pipeline: Pipeline
    threshold: float
    metrics: dict[str, Any]


def split_holdout(
    data: LabelledAds, fraction: float = HOLDOUT_FRACTION, seed: int = SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the training and held-out ads: stratified, the same on every run."""
    indices = np.arange(len(data.ads))
    train, holdout = train_test_split(
        indices, test_size=fraction, random_state=seed, stratify=data.labels
    )
    return np.sort(train), np.sort(holdout)


def model_date(data: LabelledAds, explicit: str | None = None) -> str:
    """The date in the version: given, else the generator's rules date, else today (UTC)."""
    if explicit:
        return dt.date.fromisoformat(explicit).isoformat()
    if data.source.get("kind") == "synthetic":
        return synthetic.RULES_DATE
    return dt.datetime.now(dt.UTC).date().isoformat()


def train_model(data: LabelledAds, *, date: str, progress: bool = True) -> TrainedModel:
    """Fit the moderation pipeline and the seed baseline on the same split and describe both."""
    rows = features.ads_to_rows(data.ads)
    labels = np.asarray(data.labels, dtype=int)
    train, holdout = split_holdout(data)
    steps = 2 * (THRESHOLD_FOLDS + 2) + 1
    # disable=None: a bar on a terminal, none in CI logs.
    with tqdm(total=steps, desc="training", unit="step", disable=None if progress else True) as bar:
        ours = _fit_and_score(
            "ours", pipelines.build_moderation_pipeline(), rows, labels, train, holdout, bar
        )
        seed = _fit_and_score(
            "seed", pipelines.build_seed_pipeline(), rows, labels, train, holdout, bar
        )
        bar.set_postfix_str("checking the fast scorer")
        holdout_ads = [data.ads[i] for i in holdout]
        gap = check_agreement(compile_scorer(ours.pipeline), ours.pipeline, holdout_ads)
        bar.update()
    draft = CardDraft(
        created=date,
        sklearn_version=sklearn.__version__,
        decision_threshold=ours.threshold,
        threshold_rule=THRESHOLD_RULE,
        features=describe_features(ours.pipeline),
        metrics={"holdout": ours.metrics, "fast_scorer_max_abs_gap": gap},
        baseline={
            "name": "seed model: logistic regression on four features",
            "features": list(features.SEED_FEATURES),
            "decision_threshold": seed.threshold,
            "metrics": {"holdout": seed.metrics},
        },
        training_data={
            **data.source,
            "holdout_fraction": HOLDOUT_FRACTION,
            "split_seed": SPLIT_SEED,
            "train_size": len(train),
            "holdout_size": len(holdout),
        },
    )
    return TrainedModel(ours.pipeline, seed.pipeline, draft, holdout_ads, labels[holdout])


def _fit_and_score(
    name: str,
    template: Pipeline,
    rows: np.ndarray,
    labels: np.ndarray,
    train: np.ndarray,
    holdout: np.ndarray,
    bar: tqdm,
) -> _Fitted:
    out_of_fold = np.empty(len(train))
    folds = StratifiedKFold(n_splits=THRESHOLD_FOLDS, shuffle=True, random_state=SPLIT_SEED)
    for fold, (fit, score) in enumerate(folds.split(train, labels[train]), start=1):
        bar.set_postfix_str(f"{name}: threshold fold {fold}/{THRESHOLD_FOLDS}")
        model = clone(template).fit(rows[train[fit]], labels[train[fit]])
        out_of_fold[score] = model.predict_proba(rows[train[score]])[:, 1]
        bar.update()
    threshold = best_f1_threshold(labels[train], out_of_fold)
    bar.set_postfix_str(f"{name}: fitting on the training split")
    fitted = clone(template).fit(rows[train], labels[train])
    bar.update()
    probabilities = fitted.predict_proba(rows[holdout])[:, 1]
    bar.update()
    return _Fitted(
        fitted, threshold, classification_metrics(labels[holdout], probabilities, threshold)
    )


def describe_features(fitted: Pipeline) -> dict[str, Any]:
    """What the card says about the features: enough to know what the model reads."""
    columns = fitted.named_steps["features"]
    vectorizer = columns.named_transformers_["text"].named_steps["tfidf"]
    encoder = columns.named_transformers_["category"]
    classifier = fitted.named_steps["classifier"]
    return {
        "input": list(features.RAW_FIELDS),
        "text": {
            "document": "name + newline + description",
            "vectorizer": "TF-IDF, word unigrams, l2-normalised",
            "token_pattern": vectorizer.token_pattern,
            "lowercase": vectorizer.lowercase,
            "min_df": vectorizer.min_df,
            "vocabulary_size": len(vectorizer.vocabulary_),
        },
        "category": {
            "encoding": "one-hot; unknown categories add nothing",
            "known": [int(c) for c in encoder.categories_[0]],
        },
        "signals": list(features.SIGNAL_FEATURES),
        "classifier": {
            "type": type(classifier).__name__,
            "C": classifier.C,
            "solver": classifier.solver,
        },
    }
