"""What the benches print: tables and progress lines, on stderr (stdout carries the
runner's summary)."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def print_table(title: str, rows: Sequence[Sequence[object]]) -> None:
    """A small aligned table on stderr (stdout carries the runner's summary)."""
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = [title] + [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells
    ]
    print("\n".join(lines) + "\n", file=sys.stderr, flush=True)


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)
