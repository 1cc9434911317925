"""Array parameters in PostgreSQL's binary format, built by numpy in one copy each.

A batch passes hundreds of values per statement. psycopg's generic list dumper
spent about 2 ms on four 500-element arrays. Their text literals (`'{1,2,3}'`, `repr`
of every float) cost less alone, but under load the UPDATE's parameters still took
~0.9 ms of a batch's CPU, an eighth of the handler's GIL time by py-spy; as binary
arrays, a few microseconds. `blocking.fetch_all` sends them as they are, with their
type, so the SQL needs no cast.

A statement taking a batch's array is never prepared (`blocking.fetch_all`, or
`prepare=False` where psycopg runs it): it is planned for this batch (`id =
ANY(array)` of 500 ids is a few index lookups), where PostgreSQL's generic plan for
a prepared statement, blind to the array's size, scans whole tables or, for the
consumer's read, nests loops over both arrays (9-30 ms instead of 3.5 ms per 500).
Lookups of one row stay prepared: a custom plan per call cost about 0.3 ms.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

# pg_type oids: (element, array of it)
_INT8 = (20, 1016)
_FLOAT8 = (701, 1022)
_BOOL = (16, 1000)


@dataclass(frozen=True, slots=True)
class BinaryArray:
    """A one-dimensional array without NULLs in PostgreSQL's binary format, and its type."""

    type_oid: int
    data: bytes


def bigint_array(values: Iterable[int] | np.ndarray) -> BinaryArray:
    if isinstance(values, np.ndarray):
        # "safe": a dtype that may not fit (uint64, floats) raises instead of wrapping.
        return _binary(values.astype(np.int64, casting="safe", copy=False), _INT8)
    # Raises OverflowError past the bigint range instead of wrapping.
    return _binary(np.fromiter(values, dtype=np.int64), _INT8)


def float8_array(values: Iterable[float] | np.ndarray) -> BinaryArray:
    array = values if isinstance(values, np.ndarray) else np.fromiter(values, dtype=np.float64)
    return _binary(array.astype(np.float64, copy=False), _FLOAT8)


def boolean_array(values: Iterable[bool] | np.ndarray) -> BinaryArray:
    array = values if isinstance(values, np.ndarray) else np.fromiter(values, dtype=np.bool_)
    return _binary(array.astype(np.bool_, copy=False), _BOOL)


def _binary(values: np.ndarray, oids: tuple[int, int]) -> BinaryArray:
    """Header (dimensions, no NULLs, element type, length, lower bound 1), then each
    element as its byte length and its big-endian value."""
    element_oid, array_oid = oids
    if not values.size:
        return BinaryArray(array_oid, struct.pack("!iii", 0, 0, element_oid))
    items = np.empty(
        values.size, dtype=[("length", ">i4"), ("value", values.dtype.newbyteorder(">"))]
    )
    items["length"] = values.dtype.itemsize
    items["value"] = values
    header = struct.pack("!iiiii", 1, 0, element_oid, values.size, 1)
    return BinaryArray(array_oid, header + items.tobytes())
