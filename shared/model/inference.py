"""The fast scorer: the fitted pipeline's weights applied with lookups and a few numpy calls.

The model is linear, so P(violation) = expit(intercept + text·coef + category weight +
signals·coef). For the l2-normalised TF-IDF part an ad needs only Σ count·idf·coef and
Σ (count·idf)² over its known terms, which come from term counts without building a
sparse matrix; a batch is tokenised in one pass (`batch_text`). Batches of up to
`PER_AD_MAX_BATCH` ads (an HTTP request's one ad) go to `per_ad.PerAdKernel` instead,
which skips that pass's fixed numpy cost. `compiler.py` builds a `FastScorer` from a
pipeline and checks both kernels against `predict_proba`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat

import numpy as np
from scipy.special import expit

from shared.domain import Ad
from shared.model.batch_signals import AdFields, signal_matrix
from shared.model.batch_text import join_batch, split_tokens
from shared.model.features import ad_text
from shared.model.per_ad import PerAdKernel

# Where the kernels cost the same: ~25 µs per ad one by one, against ~150 µs + 7.5 µs
# per ad vectorised (bench/bench_model_inference.py measures both).
PER_AD_MAX_BATCH = 8


@dataclass(frozen=True, slots=True)
class TermIds:
    """Where the special ids sit after the vocabulary's own 0..size-1."""

    size: int

    @property
    def unknown(self) -> int:
        return self.size

    @property
    def doc_break(self) -> int:
        return self.size + 1

    @property
    def single_character(self) -> int:
        return self.size + 2


@dataclass(frozen=True, slots=True)
class FastScorer:
    """Read-only weights of a compiled pipeline; a call shares nothing, so it is thread-safe."""

    intercept: float
    term_ids: dict[str, int]  # known terms, DOC_BREAK and ASCII single characters
    ids: TermIds
    term_idf: np.ndarray  # by term id, 0 past the vocabulary
    term_coef: np.ndarray
    known_categories: np.ndarray  # sorted, as float64
    category_coef: np.ndarray  # by position in known_categories
    signal_coef: np.ndarray
    per_ad: PerAdKernel

    def probabilities(self, ads: Sequence[Ad]) -> np.ndarray:
        """P(violation) of each ad, equal to the pipeline's `predict_proba(rows)[:, 1]`."""
        if len(ads) <= PER_AD_MAX_BATCH:
            return self.one_by_one(ads)
        return self.vectorised(ads)

    def one_by_one(self, ads: Sequence[Ad]) -> np.ndarray:
        return np.fromiter(map(self.per_ad.probability, ads), dtype=np.float64, count=len(ads))

    def vectorised(self, ads: Sequence[Ad]) -> np.ndarray:
        if not ads:
            return np.empty(0, dtype=np.float64)
        batch = join_batch([ad_text(ad.name, ad.description) for ad in ads])
        tokens = split_tokens(batch)
        ids = np.fromiter(
            map(self.term_ids.get, tokens, repeat(self.ids.unknown)),
            dtype=np.intp,
            count=len(tokens),
        )
        text_scores, token_counts, distinct_tokens = self._text_scores(ids, tokens, len(ads))
        fields = AdFields.of(ads)
        signals = signal_matrix(fields, batch, token_counts, distinct_tokens)
        category = self._category_scores(fields.category)
        return expit(self.intercept + text_scores + category + signals @ self.signal_coef)

    def _category_scores(self, category: np.ndarray) -> np.ndarray:
        """The one-hot part: the weight of each ad's category, 0 for one never seen."""
        if not self.known_categories.size:
            return np.zeros(len(category))
        index = np.searchsorted(self.known_categories, category).clip(
            max=self.known_categories.size - 1
        )
        return np.where(self.known_categories[index] == category, self.category_coef[index], 0.0)

    def _text_scores(
        self, ids: np.ndarray, tokens: list[str], n_docs: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per document: the TF-IDF part of the logit, the token count, the distinct tokens."""
        doc_of_token = np.cumsum(ids == self.ids.doc_break)
        counted = ids < self.ids.doc_break
        token_counts = np.bincount(doc_of_token[counted], minlength=n_docs)
        known = ids < self.ids.unknown
        # Sorting (document, term) keys groups each document's repeats of a term.
        keys = np.sort(doc_of_token[known] * self.ids.size + ids[known])
        first = (
            np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1]))) if keys.size else keys
        )
        counts = np.diff(np.append(first, keys.size))
        docs, terms = np.divmod(keys[first], self.ids.size)
        weights = counts * self.term_idf[terms]
        norms = np.sqrt(np.bincount(docs, weights * weights, minlength=n_docs))
        dots = np.bincount(docs, weights * self.term_coef[terms], minlength=n_docs)
        scores = np.divide(dots, norms, out=np.zeros(n_docs), where=norms > 0)
        distinct = np.bincount(docs, minlength=n_docs) + _distinct_unknown(
            tokens, doc_of_token, np.flatnonzero(ids == self.ids.unknown), n_docs
        )
        return scores, token_counts, distinct


def _distinct_unknown(
    tokens: list[str], doc_of_token: np.ndarray, positions: np.ndarray, n_docs: int
) -> np.ndarray:
    """Distinct out-of-vocabulary tokens per document: few, so plain Python is cheap."""
    pairs = set(
        zip(doc_of_token[positions].tolist(), [tokens[p] for p in positions.tolist()], strict=True)
    )
    docs = np.fromiter((doc for doc, _ in pairs), dtype=np.intp, count=len(pairs))
    return np.bincount(docs, minlength=n_docs)
