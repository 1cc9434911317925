"""Turns a fitted `build_moderation_pipeline()` into a `FastScorer`, refusing any other shape.

The scorer reimplements the vectorizer, so every setting it relies on is checked here
rather than assumed; `check_agreement` then compares it with `predict_proba`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.pipeline import Pipeline

from shared.domain import Ad
from shared.model import features
from shared.model.batch_text import ASCII_SINGLE_CHARACTERS, DOC_BREAK
from shared.model.inference import FastScorer, TermIds
from shared.model.per_ad import PerAdKernel

AGREEMENT_TOLERANCE = 1e-9
_EXPECTED_VECTORIZER: dict[str, Any] = {
    "input": "content",
    "lowercase": True,
    "preprocessor": None,
    "tokenizer": None,
    "stop_words": None,
    "strip_accents": None,
    "token_pattern": features.TOKEN_PATTERN,
    "ngram_range": (1, 1),
    "analyzer": "word",
    "binary": False,
    "norm": "l2",
    "use_idf": True,
    "sublinear_tf": False,
    "dtype": np.float64,
}


class IncompatiblePipeline(ValueError):
    """The pipeline is not one the fast scorer reproduces exactly."""


def compile_scorer(pipeline: Pipeline) -> FastScorer:
    """Read the weights out of a fitted moderation pipeline."""
    columns, classifier = _steps(pipeline)
    if classifier.coef_.shape[0] != 1:
        raise IncompatiblePipeline(
            f"expected a binary classifier, got {classifier.coef_.shape[0]} rows of coefficients"
        )
    coef = np.asarray(classifier.coef_, dtype=np.float64).ravel()
    slices = columns.output_indices_
    text = columns.named_transformers_["text"]
    if text.named_steps["document"].func is not features.texts_of:
        raise IncompatiblePipeline("expected the text step to read features.texts_of")
    if columns.named_transformers_["signals"].func is not features.signal_features:
        raise IncompatiblePipeline("expected the signals step to be features.signal_features")
    vectorizer = text.named_steps["tfidf"]
    _check_vectorizer(vectorizer.get_params())
    term_ids, term_idf, term_coef = _term_tables(vectorizer, coef[slices["text"]])
    signal_coef = coef[slices["signals"]].copy()
    if signal_coef.shape != (len(features.SIGNAL_FEATURES),):
        raise IncompatiblePipeline(
            f"expected {len(features.SIGNAL_FEATURES)} signal coefficients, "
            f"got {signal_coef.shape[0]}"
        )
    known_categories, category_coef = _category_weights(
        columns.named_transformers_["category"], coef[slices["category"]]
    )
    for array in (term_idf, term_coef, known_categories, category_coef, signal_coef):
        array.setflags(write=False)
    intercept = float(classifier.intercept_[0])
    return FastScorer(
        intercept=intercept,
        term_ids=term_ids,
        ids=TermIds(size=len(vectorizer.vocabulary_)),
        term_idf=term_idf,
        term_coef=term_coef,
        known_categories=known_categories,
        category_coef=category_coef,
        signal_coef=signal_coef,
        per_ad=PerAdKernel(
            intercept=intercept,
            term_weights=_term_weights(vectorizer.vocabulary_, term_idf, term_coef),
            category_coef=dict(zip(known_categories.tolist(), category_coef.tolist(), strict=True)),
            signal_coef=tuple(signal_coef.tolist()),
        ),
    )


def check_agreement(scorer: FastScorer, pipeline: Pipeline, ads: Sequence[Ad]) -> float:
    """The largest gap between either kernel and `predict_proba` on `ads`; raise above 1e-9."""
    if not ads:
        return 0.0
    reference = pipeline.predict_proba(features.ads_to_rows(ads))[:, 1]
    gap = 0.0
    for kernel, probabilities in (
        ("vectorised", scorer.vectorised(ads)),
        ("one-by-one", scorer.one_by_one(ads)),
    ):
        kernel_gap = float(np.max(np.abs(probabilities - reference)))
        if not kernel_gap <= AGREEMENT_TOLERANCE:
            raise IncompatiblePipeline(
                f"fast scorer ({kernel} kernel) disagrees with predict_proba by "
                f"{kernel_gap:.3g} (expected at most {AGREEMENT_TOLERANCE:g})"
            )
        gap = max(gap, kernel_gap)
    return gap


def _steps(pipeline: Any) -> tuple[Any, Any]:
    names = [name for name, _ in getattr(pipeline, "steps", [])]
    if names != ["features", "classifier"]:
        raise IncompatiblePipeline(f"expected steps ['features', 'classifier'], got {names}")
    columns = pipeline.named_steps["features"]
    fitted = [name for name, _, _ in columns.transformers_ if name != "remainder"]
    if fitted != ["text", "category", "signals"]:
        raise IncompatiblePipeline(
            f"expected columns ['text', 'category', 'signals'], got {fitted}"
        )
    return columns, pipeline.named_steps["classifier"]


def _check_vectorizer(params: dict[str, Any]) -> None:
    for name, expected in _EXPECTED_VECTORIZER.items():
        if params.get(name) != expected:
            raise IncompatiblePipeline(
                f"expected TfidfVectorizer {name}={expected!r}, got {params.get(name)!r}"
            )


def _term_tables(
    vectorizer: Any, text_coef: np.ndarray
) -> tuple[dict[str, int], np.ndarray, np.ndarray]:
    """Term → id, and idf and coefficient by id, with zeros for the special ids."""
    vocabulary: dict[str, int] = vectorizer.vocabulary_
    ids = TermIds(size=len(vocabulary))
    term_ids = dict(vocabulary)
    term_ids[DOC_BREAK] = ids.doc_break
    for character in ASCII_SINGLE_CHARACTERS:
        term_ids[character.lower()] = ids.single_character
    padding = np.zeros(3)
    return (
        term_ids,
        np.concatenate((np.asarray(vectorizer.idf_, dtype=np.float64), padding)),
        np.concatenate((text_coef, padding)),
    )


def _term_weights(
    vocabulary: dict[str, int], term_idf: np.ndarray, term_coef: np.ndarray
) -> dict[str, tuple[float, float]]:
    """Known term -> (idf, coefficient), as Python floats for the per-ad kernel."""
    idf, coef = term_idf.tolist(), term_coef.tolist()
    return {term: (idf[i], coef[i]) for term, i in vocabulary.items()}


def _category_weights(encoder: Any, coef: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Known categories, sorted, with their one-hot coefficients."""
    if encoder.drop is not None or encoder.handle_unknown != "ignore":
        raise IncompatiblePipeline("expected OneHotEncoder(drop=None, handle_unknown='ignore')")
    infrequent = getattr(encoder, "infrequent_categories_", None)
    if infrequent is not None and any(group is not None for group in infrequent):
        raise IncompatiblePipeline("expected a OneHotEncoder without infrequent categories")
    categories = np.asarray(encoder.categories_[0], dtype=np.float64)
    order = np.argsort(categories, kind="stable")
    return categories[order], np.asarray(coef, dtype=np.float64)[order]
