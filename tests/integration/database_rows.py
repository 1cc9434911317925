"""Rows a test puts in, or reads back from, the test database."""

from __future__ import annotations

from shared.bootstrap import Services


def seed_ads(services: Services, count: int, *, name: str = "Mountain bike") -> list[int]:
    """Insert one seller and `count` ads; returns their ids."""
    with services.db.transaction() as tx:
        seller_id = tx.conn.execute(
            "INSERT INTO sellers (is_verified) VALUES (true) RETURNING id"
        ).fetchone()[0]
        rows = tx.conn.execute(
            """
            INSERT INTO ads (seller_id, name, description, category, images_qty)
            SELECT %s, %s || ' ' || n, 'Aluminium frame, 21 gears, barely used.', 3, 4
            FROM generate_series(1, %s) AS n
            RETURNING id
            """,
            (seller_id, name, count),
        ).fetchall()
    return [row[0] for row in rows]


def task_rows(services: Services) -> list[tuple]:
    with services.db.transaction() as tx:
        return tx.conn.execute(
            "SELECT id, item_id, status, attempts, error_message, probability"
            " FROM moderation_results ORDER BY id"
        ).fetchall()
