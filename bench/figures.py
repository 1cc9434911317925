"""How a bench turns measurements into the figures it records: ratios and rounding."""

from __future__ import annotations

import math


def ratio(value: float, baseline: float, digits: int = 2) -> float:
    """value / baseline rounded down, so that a miss never reads as a hit: rounded to the
    nearest, 0.4951 of a 0.5 target would be recorded as 0.5."""
    scale = 10**digits
    quotient = value / baseline
    if not math.isfinite(quotient):
        return quotient  # NaN (a run with no samples): the runner fails the bench on it
    # Rounded to 1e-6 of a step first: 57 / 100 * 100 is 56.99999999999999 in floats.
    return math.floor(round(quotient * scale, 6)) / scale


def rounded_up(value: float, digits: int = 0) -> float:
    """A time held to an upper bound, rounded up: 10.004 ms of a < 10 ms target must not
    be recorded as 10.0."""
    if not math.isfinite(value):
        return value  # as `ratio` does
    scale = 10**digits
    return math.ceil(round(value * scale, 6)) / scale


def rounded_down(value: float, digits: int = 0) -> float:
    """A rate held to a lower bound, rounded down, as `ratio` is (a whole one as an int,
    as `round` gives it)."""
    if not math.isfinite(value):
        return value  # as `ratio` does
    scale = 10**digits
    down = math.floor(round(value * scale, 6))
    return down if digits == 0 else down / scale
