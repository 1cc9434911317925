"""Reading ads together with their seller's verification flag."""

from __future__ import annotations

from collections.abc import Sequence

import psycopg

from shared.db.arrays import bigint_array
from shared.db.blocking import KeyLookup, fetch_one
from shared.domain import Ad

_AD_WITH_SELLER = """
    SELECT a.id, a.seller_id, s.is_verified, a.name, a.description, a.category, a.images_qty
    FROM ads a JOIN sellers s ON s.id = a.seller_id
"""


# simple_predict's one query, so it runs as one blocking call (see shared/db/blocking.py).
_AD_BY_ID = KeyLookup("ad_with_seller_by_id", _AD_WITH_SELLER + " WHERE a.id = $1")


def load_ad_with_seller(conn: psycopg.Connection, item_id: int) -> Ad | None:
    row = fetch_one(conn, _AD_BY_ID, (item_id,))
    return Ad(*row) if row else None


def load_ads_with_sellers(conn: psycopg.Connection, item_ids: Sequence[int]) -> dict[int, Ad]:
    """All the ads of a batch in one query, by id; a missing ad is simply absent."""
    query = _AD_WITH_SELLER + " WHERE a.id = ANY(%s::bigint[])"
    rows = conn.execute(query, (bigint_array(item_ids),), prepare=False).fetchall()
    return {row[0]: Ad(*row) for row in rows}
