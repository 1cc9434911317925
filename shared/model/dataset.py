"""A user's own labelled ads from CSV, read into the same shape the synthetic generator gives.

Columns (a header row is required, extra columns are ignored):

    name                text
    description         text, may be empty
    category            integer >= 0
    images_qty          integer >= 0
    is_verified_seller  true/false, 1/0 or yes/no
    is_violation        the label: true/false, 1/0 or yes/no
    item_id             optional integer; the row number when absent
"""

from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path

from shared.domain import Ad
from shared.model.synthetic import LabelledAds
from shared.model.validation import MAX_CATEGORY, MAX_IMAGES_QTY

REQUIRED_COLUMNS = (
    "name",
    "description",
    "category",
    "images_qty",
    "is_verified_seller",
    "is_violation",
)
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}


# Training holds a quarter of each label out and picks its threshold on three folds of
# the rest: with fewer ads of a label, scikit-learn refuses the split, or the metrics
# would be those of one or two ads.
MIN_ADS_PER_LABEL_TO_TRAIN = 20


class InvalidDataset(ValueError):
    """A CSV file that does not hold labelled ads in the documented columns."""


def check_enough_to_train(data: LabelledAds, path: Path) -> None:
    violations = sum(data.labels)
    clean = len(data.labels) - violations
    if min(violations, clean) < MIN_ADS_PER_LABEL_TO_TRAIN:
        raise InvalidDataset(
            f"{path.name}: expected at least {MIN_ADS_PER_LABEL_TO_TRAIN} violations and"
            f" {MIN_ADS_PER_LABEL_TO_TRAIN} clean ads to train on, got {violations} and {clean}"
        )


def read_labelled_csv(path: Path) -> LabelledAds:
    """Every row of `path` as an Ad with its label; raise InvalidDataset naming row and column."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise InvalidDataset(f"{path.name}: line {line}: expected UTF-8 text: {error}") from None
    rows = csv.DictReader(io.StringIO(text, newline=""))
    ads: list[Ad] = []
    labels: list[int] = []
    try:
        missing = [column for column in REQUIRED_COLUMNS if column not in (rows.fieldnames or [])]
        if missing:
            raise InvalidDataset(f"{path.name}: expected columns {', '.join(missing)}")
        for number, row in enumerate(rows, start=1):
            ad, label = _parse_row(row, rows.line_num, default_item_id=number)
            ads.append(ad)
            labels.append(label)
    except csv.Error as error:
        # A field past the csv module's limit (131,072 characters): most often a quote
        # left open on this line, which runs on through the rest of the file.
        raise InvalidDataset(
            f"{path.name}: line {rows.line_num + 1}: {error} (a quote left open?)"
        ) from None
    if len(set(labels)) < 2:
        raise InvalidDataset(
            f"{path.name}: expected both violations and clean ads, got {len(ads)} rows of one label"
        )
    source = {
        "kind": "csv",
        "file": path.name,
        "sha256": hashlib.sha256(raw).hexdigest(),
        "size": len(ads),
        "violation_rate": round(sum(labels) / len(labels), 4),
    }
    return LabelledAds(ads=ads, labels=labels, source=source)


def _parse_row(row: dict[str, str], line: int, default_item_id: int) -> tuple[Ad, int]:
    item_id = row.get("item_id") or str(default_item_id)
    ad = Ad(
        item_id=_integer(item_id, "item_id", line),
        seller_id=0,
        is_verified_seller=_boolean(row["is_verified_seller"], "is_verified_seller", line),
        name=row["name"] or "",
        description=row["description"] or "",
        # Bounded as a served ad's are (validation.py): past them the model could never
        # score the ad, and past 2**53 the fast scorer's float64 categories collide.
        category=_integer(row["category"], "category", line, maximum=MAX_CATEGORY),
        images_qty=_integer(row["images_qty"], "images_qty", line, maximum=MAX_IMAGES_QTY),
    )
    return ad, int(_boolean(row["is_violation"], "is_violation", line))


def _integer(value: str | None, column: str, line: int, maximum: int | None = None) -> int:
    try:
        number = int((value or "").strip())
    except ValueError:
        raise InvalidDataset(
            f"line {line}: expected {column} to be an integer, got {value!r}"
        ) from None
    if number < 0:
        raise InvalidDataset(f"line {line}: expected {column} >= 0, got {number}")
    if maximum is not None and number > maximum:
        raise InvalidDataset(f"line {line}: expected {column} <= {maximum}, got {number!s:.80}")
    return number


def _boolean(value: str | None, column: str, line: int) -> bool:
    text = (value or "").strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise InvalidDataset(
        f"line {line}: expected {column} to be true/false, 1/0 or yes/no, got {value!r}"
    )
