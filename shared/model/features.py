"""What the model reads from an ad: raw rows, its text, tokens and a moderator's signals.

The sklearn pipeline (`pipeline.py`) and the fast scorer's per-ad kernel (`per_ad.py`)
call these very functions. Its batch kernel (`batch_signals.py`, `batch_text.py`)
computes the same features column by column, with the patterns defined here; what keeps
all three from drifting apart is `compiler.check_agreement`, run on every model at
training and again, on the probe ads of `probes.py`, at every load.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from shared.domain import Ad

RAW_FIELDS = ("name", "description", "category", "images_qty", "is_verified_seller")
NAME, DESCRIPTION, CATEGORY, IMAGES_QTY, IS_VERIFIED_SELLER = range(len(RAW_FIELDS))

# The same tokens as scikit-learn's default r"(?u)\b\w\w+\b" (a greedy run of two or more
# word characters always starts and ends at a word boundary), found twice as fast.
TOKEN_PATTERN = r"\w\w+"
TOKEN_RE = re.compile(TOKEN_PATTERN)

SEED_FEATURES = ("is_verified_seller", "images_qty/10", "len(description)/1000", "category/100")
# A linear model extrapolates past the numbers it was trained on, so ours read none past
# the training ads': uncapped, a description of 3,000 characters (the schema allows
# 20,000) outweighed any text and made every ad a violation. The category is left to its
# one-hot alone, which gives a category never seen nothing: read as a number, as the
# seed's model reads it, category 20,000 cleared every violation.
MAX_IMAGES = 10  # as many as an ad sent to /predict may have
MAX_TEXT_CHARS = 1_000  # the default model's training descriptions run to ~1,050
SIGNAL_FEATURES = (
    "is_verified_seller",
    # The caps are in the names a card records, so a model trained with other caps is
    # refused at load (loading._check_signals) rather than scored on numbers it never saw.
    f"min(images_qty, {MAX_IMAGES})/{MAX_IMAGES}",
    f"min(len(description), {MAX_TEXT_CHARS})/{MAX_TEXT_CHARS}",
    "no_images",
    "phone_numbers",
    "emails",
    "links",
    "handles",
    "shouting_share",
    "exclamations",
    f"log1p(min(len(text), {MAX_TEXT_CHARS}))/10",
    "repeated_words_share",
    "empty_looking_description",
    "unverified_bare_ad",
)

_TLDS = "com|net|org|ru|shop|biz|site|info|io|me|ly"


@dataclass(frozen=True, slots=True)
class DigitChain:
    """`digits` ASCII digits in a row, each at most `max_gap` characters after the one before."""

    digits: int
    max_gap: int


@dataclass(frozen=True, slots=True)
class ContactPattern:
    """A contact detector on lower-cased text: its count is the sum of its patterns' matches.

    Every match of a pattern with a `digit_chain` contains that chain, which numpy finds
    for a whole batch, so only the documents that have one are searched.
    """

    name: str
    patterns: tuple[re.Pattern[str], ...]
    digit_chain: DigitChain | None = None

    def count(self, lowered: str) -> int:
        return sum(len(pattern.findall(lowered)) for pattern in self.patterns)


# Each pattern starts with a literal where it can (`re` then skips ahead to it), and none
# matches across a blank line, so the fast scorer runs each once over a whole batch.
CONTACT_PATTERNS = (
    ContactPattern(
        "phone_numbers",
        (re.compile(r"[0-9](?:[ \t().-]{0,2}[0-9]){8,12}"),),
        digit_chain=DigitChain(digits=9, max_gap=3),
    ),
    # An "@" with a name character before it and a dotted domain after it.
    ContactPattern("emails", (re.compile(r"@(?<=[\w.+-]@)[\w-]+\.\w"),)),
    # Link marks: a scheme, a "www." or a domain ending; one link may show two or three.
    ContactPattern(
        "links",
        (re.compile("://"), re.compile(r"www\."), re.compile(rf"\.(?<=[\w-]\.)(?:{_TLDS})\b")),
    ),
    # An "@" that does not follow a name character, then a handle of three or more.
    ContactPattern("handles", (re.compile(r"@(?<![\w.+-]@)\w{3,}"),)),
)
# Runs of three or more Latin or Cyrillic capitals, on the text as written.
CAPITALS = (("A", "Z"), ("А", "Я"), ("Ё", "Ё"))
SHOUTING_RE = re.compile("[" + "".join(f"{low}-{high}" for low, high in CAPITALS) + "]{3,}")
EMPTY_LOOKING_CHARS = 25
MAX_COUNT = 3


def ad_text(name: str, description: str) -> str:
    """The text the vectorizer reads: name and description, one document per ad."""
    return f"{name}\n{description}"


def tokenize(text: str) -> list[str]:
    """Exactly scikit-learn's word analyzer with `lowercase=True` and unigrams."""
    return TOKEN_RE.findall(text.lower())


def ads_to_rows(ads: Sequence[Ad]) -> np.ndarray:
    """The pipeline's input: one object row of `RAW_FIELDS` per ad, no pandas."""
    rows = np.empty((len(ads), len(RAW_FIELDS)), dtype=object)
    for index, ad in enumerate(ads):
        rows[index] = (ad.name, ad.description, ad.category, ad.images_qty, ad.is_verified_seller)
    return rows


def texts_of(rows: np.ndarray) -> list[str]:
    """Pipeline step: the rows' documents for the vectorizer."""
    return [ad_text(name, description) for name, description in rows[:, [NAME, DESCRIPTION]]]


def seed_features(rows: np.ndarray) -> np.ndarray:
    """Pipeline step: the four features of the seed model, for the baseline."""
    return np.array([_seed_values(*row) for row in rows], dtype=np.float64).reshape(-1, 4)


def signal_features(rows: np.ndarray) -> np.ndarray:
    """Pipeline step: the `SIGNAL_FEATURES` of each row."""
    values = [
        moderator_signals(name, description, images, verified, tokenize(ad_text(name, description)))
        for name, description, _, images, verified in rows
    ]
    return np.array(values, dtype=np.float64).reshape(-1, len(SIGNAL_FEATURES))


def _seed_values(
    name: str, description: str, category: int, images_qty: int, is_verified_seller: bool
) -> tuple[float, float, float, float]:
    return (
        float(is_verified_seller),
        images_qty / 10,
        len(description) / 1000,
        category / 100,
    )


def moderator_signals(
    name: str,
    description: str,
    images_qty: int,
    is_verified_seller: bool,
    tokens: list[str],
) -> tuple[float, ...]:
    """The `SIGNAL_FEATURES` of one ad; `tokens` are `tokenize(ad_text(name, description))`."""
    text = ad_text(name, description)
    lowered = text.lower()
    phones, emails, links, handles = (contact.count(lowered) for contact in CONTACT_PATTERNS)
    shouted = len(SHOUTING_RE.findall(text))
    empty_looking = len(description.strip()) < EMPTY_LOOKING_CHARS
    n_tokens = len(tokens)
    return (
        float(is_verified_seller),
        min(images_qty, MAX_IMAGES) / MAX_IMAGES,
        min(len(description), MAX_TEXT_CHARS) / MAX_TEXT_CHARS,
        float(images_qty == 0),
        float(min(phones, MAX_COUNT)),
        float(min(emails, MAX_COUNT)),
        float(min(links, MAX_COUNT)),
        float(min(handles, MAX_COUNT)),
        shouted / n_tokens if n_tokens else 0.0,
        min(text.count("!"), 10) / 10,
        math.log1p(min(len(text), MAX_TEXT_CHARS)) / 10,
        (n_tokens - len(set(tokens))) / n_tokens if n_tokens else 0.0,
        float(empty_looking),
        float(empty_looking and images_qty == 0 and not is_verified_seller),
    )
