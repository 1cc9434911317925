"""Array parameters as PostgreSQL literals (`'{1,2,3}'`), cast in SQL with `::bigint[]`.

A batch passes hundreds of values per statement; psycopg's generic list dumper
spends about 2 ms on four 500-element arrays, these joins about 0.4 ms.
Only for numbers and booleans, whose text form needs no quoting.

A statement taking a batch's array is never prepared (`prepare=False`, or
`blocking.fetch_all`): it is planned for this batch (`id = ANY(array)` of 500 ids is a
few index lookups), where PostgreSQL's generic plan for a prepared statement, blind
to the array's size, scans whole tables or, for the consumer's read, nests loops over
both arrays (30 ms instead of 3.5 ms per 500). Lookups of one row stay prepared: a
custom plan per call cost about 0.3 ms.
"""

from __future__ import annotations

from collections.abc import Iterable


def bigint_array(values: Iterable[int]) -> str:
    # int() first, so that nothing but digits reaches the SQL.
    return "{" + ",".join(map(str, map(int, values))) + "}"


def float8_array(values: Iterable[float]) -> str:
    # repr is the shortest text that reads back as the same double.
    return "{" + ",".join(map(repr, map(float, values))) + "}"


def boolean_array(values: Iterable[bool]) -> str:
    return "{" + ",".join(["t" if value else "f" for value in values]) + "}"
