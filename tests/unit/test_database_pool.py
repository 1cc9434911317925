"""The pool's boundary: whatever PostgreSQL or the pool refuses leaves as DatabaseUnavailable."""

from __future__ import annotations

import pytest

from shared.db.pool import Database
from shared.errors import DatabaseUnavailable


def test_a_pool_closed_at_shutdown_answers_as_an_outage_not_a_bug():
    # The runner closes its services and leaves them installed: a late request must get
    # the 503 of an outage, where the pool's PoolClosed on reopening was a 500.
    db = Database("postgresql://127.0.0.1:9/unused", connect_timeout_s=1)
    db._ensure_open()
    db.close()

    with pytest.raises(DatabaseUnavailable, match="PostgreSQL unavailable"), db.autocommit():
        pass
