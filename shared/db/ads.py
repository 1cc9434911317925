"""Reading ads together with their seller's verification flag."""

from __future__ import annotations

import psycopg

from shared.domain import Ad

_AD_WITH_SELLER = """
    SELECT a.id, a.seller_id, s.is_verified, a.name, a.description, a.category, a.images_qty
    FROM ads a JOIN sellers s ON s.id = a.seller_id
"""


def load_ad_with_seller(conn: psycopg.Connection, item_id: int) -> Ad | None:
    row = conn.execute(_AD_WITH_SELLER + " WHERE a.id = %s", (item_id,)).fetchone()
    return Ad(*row) if row else None


def ad_exists(conn: psycopg.Connection, item_id: int) -> bool:
    return conn.execute("SELECT 1 FROM ads WHERE id = %s", (item_id,)).fetchone() is not None
