"""A command-line argument that is a number of seconds to wait, for argparse's `type`."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def positive_seconds(maximum: float) -> Callable[[str], float]:
    """A parser of seconds above 0 and at most `maximum`: a longer wait is a typo, and one
    past the platform's time_t crashes the waits that are given it."""

    def parse(text: str) -> float:
        try:
            seconds = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a number of seconds, got {text!r}"
            ) from None
        if not 0 < seconds <= maximum:
            raise argparse.ArgumentTypeError(
                f"expected a positive number of seconds, at most {maximum:g}, got {text!r}"
            )
        return seconds

    return parse
