"""Refuses ad fields the model cannot score, saying which ad and field, expected and found."""

from __future__ import annotations

from collections.abc import Sequence

from shared.domain import Ad
from shared.errors import InvalidFeatures

MAX_IMAGES_QTY = 1_000
MAX_CATEGORY = 2**31 - 1  # a PostgreSQL integer


def validate_ads(ads: Sequence[Ad]) -> None:
    """Raise `InvalidFeatures` for the first ad with a field of the wrong type or range."""
    for ad in ads:
        try:
            well_formed = (
                type(ad.name) is str
                and type(ad.description) is str
                and type(ad.category) is int
                and type(ad.images_qty) is int
                and type(ad.is_verified_seller) is bool
                and 0 <= ad.category <= MAX_CATEGORY
                and 0 <= ad.images_qty <= MAX_IMAGES_QTY
            )
        except AttributeError:
            raise InvalidFeatures(f"expected an Ad, got {type(ad).__name__}") from None
        if not well_formed:
            raise InvalidFeatures(_problem(ad))


def _problem(ad: Ad) -> str:
    expected_types = {
        "name": str,
        "description": str,
        "category": int,
        "images_qty": int,
        "is_verified_seller": bool,
    }
    for field, expected in expected_types.items():
        value = getattr(ad, field)
        if type(value) is not expected:
            return (
                f"ad {ad.item_id!r}: expected {field} to be {expected.__name__}, "
                f"got {type(value).__name__} {value!r:.80}"
            )
    if not 0 <= ad.category <= MAX_CATEGORY:
        return _out_of_range(ad, "category", MAX_CATEGORY, ad.category)
    return _out_of_range(ad, "images_qty", MAX_IMAGES_QTY, ad.images_qty)


def _out_of_range(ad: Ad, field: str, maximum: int, value: int) -> str:
    return f"ad {ad.item_id!r}: expected {field} between 0 and {maximum}, got {value}"
