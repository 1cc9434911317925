"""The fast scorer's kernel for one ad at a time: the same weights, in plain Python.

The vectorised kernel (`inference.FastScorer`) pays a fixed ~0.15 ms of numpy calls
per batch, most of an HTTP request's model time for a batch of one; this one costs
about 25 µs per ad. It reads the ad through `features.tokenize` and
`features.moderator_signals`, the very functions the sklearn pipeline calls, and
`compiler.check_agreement` holds both kernels to `predict_proba` within 1e-9.
"""

from __future__ import annotations

import math
import operator
from collections import Counter
from dataclasses import dataclass

from shared.domain import Ad
from shared.model.features import ad_text, moderator_signals, tokenize


@dataclass(frozen=True, slots=True)
class PerAdKernel:
    """Read-only weights as dicts and tuples; a call shares nothing, so it is thread-safe."""

    intercept: float
    term_weights: dict[str, tuple[float, float]]  # known term -> (idf, coefficient)
    category_coef: dict[float, float]  # known category -> its one-hot coefficient
    signal_coef: tuple[float, ...]

    def probability(self, ad: Ad) -> float:
        """P(violation), equal to the pipeline's `predict_proba([row])[0, 1]`."""
        tokens = tokenize(ad_text(ad.name, ad.description))
        signals = moderator_signals(
            ad.name, ad.description, ad.images_qty, ad.is_verified_seller, tokens
        )
        logit = (
            self.intercept
            + self._text_score(tokens)
            + self.category_coef.get(float(ad.category), 0.0)
            + math.fsum(map(operator.mul, signals, self.signal_coef))
        )
        return _expit(logit)

    def _text_score(self, tokens: list[str]) -> float:
        """The l2-normalised TF-IDF vector's dot product with the coefficients."""
        dot = squares = 0.0
        for term, count in Counter(tokens).items():
            weights = self.term_weights.get(term)
            if weights is not None:
                weight = count * weights[0]
                dot += weight * weights[1]
                squares += weight * weight
        return dot / math.sqrt(squares) if squares > 0 else 0.0


def _expit(x: float) -> float:
    # Split by sign so that exp never overflows, as scipy.special.expit does.
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)
