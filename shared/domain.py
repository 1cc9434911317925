"""Plain data that crosses module boundaries: what the model reads and what it returns.

NamedTuples rather than dataclasses: the consumer makes one of each per record, and
a tuple is several times cheaper to build while just as immutable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np


class Ad(NamedTuple):
    """An ad with its seller's verification flag: everything the model reads."""

    item_id: int
    seller_id: int
    is_verified_seller: bool
    name: str
    description: str
    category: int
    images_qty: int


class Verdict(NamedTuple):
    item_id: int
    is_violation: bool
    probability: float  # P(violation)
    model_version: str


class BatchVerdicts(NamedTuple):
    """A batch's verdicts as columns, in the order of its ads: the consumer writes them
    with one UPDATE and makes no object per ad."""

    is_violation: np.ndarray  # bool
    probability: np.ndarray  # float64, P(violation)
    model_version: str

    @classmethod
    def joined(cls, parts: Sequence[BatchVerdicts], model_version: str) -> BatchVerdicts:
        return cls(
            np.concatenate([part.is_violation for part in parts]).astype(np.bool_),
            np.concatenate([part.probability for part in parts]).astype(np.float64),
            model_version,
        )
