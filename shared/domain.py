"""Plain data that crosses module boundaries: what the model reads and what it returns."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Ad:
    """An ad with its seller's verification flag: everything the model reads."""

    item_id: int
    seller_id: int
    is_verified_seller: bool
    name: str
    description: str
    category: int
    images_qty: int


@dataclass(frozen=True, slots=True)
class Verdict:
    item_id: int
    is_violation: bool
    probability: float  # P(violation)
    model_version: str
