"""What a relay pass leaves for the next, as its gauges show it."""

from __future__ import annotations

from typing import NamedTuple

# The SELECT around a query of the waiting rows' `created_at`, capped by its LIMIT: their
# count, and the age of the oldest of them (0 with none). Exact while the backlog is
# under the cap; past it, the rows counted are likely the least tried (the relays'
# indexes lead with publish_tries), so the age may understate, and an alert on the
# count has long fired.
MEASURED = """
    SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8
    FROM ({waiting}) AS waiting
"""


class OutboxBacklog(NamedTuple):
    rows: int  # rows past the grace period still waiting, counted up to a cap
    oldest_age_s: float  # seconds since the oldest of those was written; 0 with none
