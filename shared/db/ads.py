"""Reading ads together with their seller's verification flag."""

from __future__ import annotations

from collections.abc import Sequence

import psycopg

from shared.db.arrays import bigint_array
from shared.domain import Ad

_AD_WITH_SELLER = """
    SELECT a.id, a.seller_id, s.is_verified, a.name, a.description, a.category, a.images_qty
    FROM ads a JOIN sellers s ON s.id = a.seller_id
"""


def load_ad_with_seller(conn: psycopg.Connection, item_id: int) -> Ad | None:
    row = conn.execute(_AD_WITH_SELLER + " WHERE a.id = %s", (item_id,)).fetchone()
    return Ad(*row) if row else None


def load_ads_with_sellers(conn: psycopg.Connection, item_ids: Sequence[int]) -> dict[int, Ad]:
    """All the ads of a batch in one query, by id; a missing ad is simply absent."""
    query = _AD_WITH_SELLER + " WHERE a.id = ANY(%s::bigint[])"
    rows = conn.execute(query, (bigint_array(item_ids),), prepare=False).fetchall()
    return {row[0]: Ad(*row) for row in rows}
