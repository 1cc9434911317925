"""A few demo sellers and ads, so the walkthrough (`item_id=1`) works on a fresh database.

Idempotent: fixed ids with ON CONFLICT DO NOTHING, then the id sequences are
moved past them so ads created later do not collide.
"""

from __future__ import annotations

import math

import psycopg

SELLERS = [(1, True), (2, False), (3, True)]
# (id, seller_id, name, description, category, images_qty); the categories are those of
# the default model's training data (sports 42, phones 3, furniture 27, clothes 33), so
# each ad's category weighs in as it would for a real one.
ADS = [
    (1, 1, "Road bike, 54 cm frame", "Aluminium frame, 105 groupset, serviced in May.", 42, 4),
    (2, 2, "iPhone 13 128 GB", "Used, small scratch on the back. Pickup only.", 3, 3),
    (3, 2, "CALL NOW!!! BEST PRICE", "call +1 555 0100 200 or write to cheap@deals.biz", 3, 0),
    (4, 3, "Sofa, three seats", "Grey fabric, no pets, no smoking. Buyer collects.", 27, 2),
    (5, 2, "Designer bag 1:1 copy", "Replica, same as original, message me", 33, 1),
]


def seed_demo_data(database_url: str, *, connect_timeout_s: float = 5.0) -> int:
    """Insert the demo rows that are missing; returns how many ads were added."""
    # libpq counts whole seconds: rounded up, as the pool does. Nothing prepared (even
    # executemany prepares by default): behind a pooler in transaction mode it would stay
    # on the server connection and collide with the next start's.
    with psycopg.connect(
        database_url, connect_timeout=math.ceil(connect_timeout_s), prepare_threshold=None
    ) as conn:
        conn.cursor().executemany(
            "INSERT INTO sellers (id, is_verified) VALUES (%s, %s) ON CONFLICT (id) DO NOTHING",
            SELLERS,
        )
        added = 0
        for ad in ADS:
            cursor = conn.execute(
                "INSERT INTO ads (id, seller_id, name, description, category, images_qty)"
                " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
                ad,
            )
            added += cursor.rowcount
        for table in ("sellers", "ads"):
            conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                f" GREATEST((SELECT max(id) FROM {table}), 1))"
            )
    return added
