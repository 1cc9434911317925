"""Reading ads together with their seller's verification flag."""

from __future__ import annotations

import psycopg

from shared.db.blocking import KeyLookup, fetch_one
from shared.domain import Ad

# The columns of an `Ad`, in its order, from `ads a JOIN sellers s`.
AD_COLUMNS = "a.id, a.seller_id, s.is_verified, a.name, a.description, a.category, a.images_qty"

# simple_predict's one query, so it runs as one blocking call (see shared/db/blocking.py).
_AD_BY_ID = KeyLookup(
    "ad_with_seller_by_id",
    f"SELECT {AD_COLUMNS} FROM ads a JOIN sellers s ON s.id = a.seller_id WHERE a.id = $1",
)


def load_ad_with_seller(conn: psycopg.Connection, item_id: int) -> Ad | None:
    row = fetch_one(conn, _AD_BY_ID, (item_id,))
    return Ad(*row) if row else None
