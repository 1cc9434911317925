"""How the outbox statements that name their rows by id ask for those still unpublished.

`published_at IS NULL` is the predicate of the relay's partial indexes (V0004, V0008),
and a statement that says it in those words lets the planner read its rows through
them. Analysed while nothing waited, those indexes are empty to the statistics, and so
the cheapest path; after a backlog has built up (Kafka down for a while) the planner
keeps choosing them until autovacuum analyses the table again, and a statement that names
its rows by id then read the whole backlog, filtering it for those ids: ~30 ms to mark
one task published at 200k waiting and ~0.5 s for the relay's 500, growing with the
backlog while the relay holds the rows' locks. Said as below, the predicate implies
nothing about the partial indexes, so these statements find their rows by primary key.
The relay's claims, which want the backlog, keep the plain form.
"""

STILL_UNPUBLISHED = "(published_at IS NULL) IS TRUE"
