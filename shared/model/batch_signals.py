"""`features.moderator_signals` for a whole batch at once, column by column.

Each column mirrors one line of `moderator_signals`; `tests/unit/test_model_inference.py`
checks the two agree on ads made to hit every pattern.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from shared.domain import Ad
from shared.model import features
from shared.model.batch_text import CodePoints, JoinedBatch, count_contacts


@dataclass(frozen=True, slots=True)
class AdFields:
    """The numeric fields of a batch of ads, one float64 array each."""

    verified: np.ndarray
    images: np.ndarray
    category: np.ndarray
    description_length: np.ndarray
    stripped_description_length: np.ndarray

    @classmethod
    def of(cls, ads: Sequence[Ad]) -> AdFields:
        rows = [
            (
                ad.is_verified_seller,
                ad.images_qty,
                ad.category,
                len(ad.description),
                len(ad.description.strip()),
            )
            for ad in ads
        ]
        return cls(*np.array(rows, dtype=np.float64).reshape(-1, 5).T)


def signal_matrix(
    fields: AdFields, batch: JoinedBatch, token_counts: np.ndarray, distinct_tokens: np.ndarray
) -> np.ndarray:
    """One row of `features.SIGNAL_FEATURES` per ad."""
    verified, images = fields.verified, fields.images
    codes = CodePoints.of(batch)
    contacts = {
        contact.name: count_contacts(contact, batch, codes) for contact in features.CONTACT_PATTERNS
    }
    shouted = codes.count_runs_per_doc(codes.in_ranges(features.CAPITALS), min_length=3)
    exclamations = codes.count_per_doc(codes.values == ord("!"))
    no_images = images == 0
    empty_looking = fields.stripped_description_length < features.EMPTY_LOOKING_CHARS
    columns = (
        verified,
        np.minimum(images, features.MAX_IMAGES) / features.MAX_IMAGES,
        np.minimum(fields.description_length, features.MAX_TEXT_CHARS) / features.MAX_TEXT_CHARS,
        no_images,
        np.minimum(contacts["phone_numbers"], features.MAX_COUNT),
        np.minimum(contacts["emails"], features.MAX_COUNT),
        np.minimum(contacts["links"], features.MAX_COUNT),
        np.minimum(contacts["handles"], features.MAX_COUNT),
        _share(shouted, token_counts),
        np.minimum(exclamations, 10) / 10,
        np.log1p(np.minimum(batch.lengths, features.MAX_TEXT_CHARS)) / 10,
        _share(token_counts - distinct_tokens, token_counts),
        empty_looking,
        empty_looking & no_images & (verified == 0),
    )
    return np.array(columns, dtype=np.float64).T


def _share(part: np.ndarray, whole: np.ndarray) -> np.ndarray:
    return np.divide(part, whole, out=np.zeros(len(whole)), where=whole > 0)
