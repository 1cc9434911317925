"""Plain data that crosses module boundaries: what the model reads and what it returns.

NamedTuples rather than dataclasses: the consumer makes one of each per record, and
a tuple is several times cheaper to build while just as immutable.
"""

from __future__ import annotations

from typing import NamedTuple


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
