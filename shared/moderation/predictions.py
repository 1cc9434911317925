"""Synchronous verdicts: for an ad given in full, or for one stored in PostgreSQL."""

from __future__ import annotations

from shared.bootstrap import Services
from shared.domain import Ad, Verdict
from shared.errors import AdNotFound


def predict_ad(services: Services, ad: Ad) -> Verdict:
    return services.model.get().predict([ad])[0]


def predict_stored_ad(services: Services, item_id: int) -> Verdict:
    """Load the ad and its seller in one query, then score it."""
    with services.db.autocommit() as session:
        ad = session.load_ad_with_seller(item_id)
    if ad is None:
        raise AdNotFound(item_id)
    return predict_ad(services, ad)
