"""A batch of ad texts joined into one string, so each regex scans it once instead of per ad.

Documents are separated by blank lines, which no token or signal pattern crosses, and
the lower-cased join also carries `DOC_BREAK` between documents: upper case survives no
`str.lower()`, so that token can only come from the separator and tells which ad every
token belongs to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from shared.model.features import TOKEN_RE, ContactPattern, DigitChain

DOC_BREAK = "DOCBREAK"
_LOWER_SEPARATOR = f"\n\n\n {DOC_BREAK} \n\n\n"
_CASED_SEPARATOR = "\n\n\n\n\n\n"
# On ASCII text, `\w` is [A-Za-z0-9_]: blanking everything else and splitting on spaces
# gives the maximal word runs, the same as TOKEN_RE plus the one-character runs.
_ASCII_NON_WORD_TO_SPACE = {c: " " for c in range(128) if not (chr(c).isalnum() or chr(c) == "_")}
ASCII_SINGLE_CHARACTERS = tuple(chr(c) for c in range(128) if chr(c).isalnum() or chr(c) == "_")


@dataclass(frozen=True, slots=True)
class JoinedBatch:
    texts: list[str]
    lengths: np.ndarray  # of each text, as float64
    lowered: list[str]
    lower_joined: str
    lower_starts: np.ndarray
    cased_joined: str
    cased_starts: np.ndarray

    def __len__(self) -> int:
        return len(self.texts)


def join_batch(texts: list[str]) -> JoinedBatch:
    lowered = [text.lower() for text in texts]
    lengths = _lengths(texts)
    return JoinedBatch(
        texts=texts,
        lengths=lengths.astype(np.float64),
        lowered=lowered,
        lower_joined=_LOWER_SEPARATOR.join(lowered),
        lower_starts=_starts(_lengths(lowered), len(_LOWER_SEPARATOR)),
        cased_joined=_CASED_SEPARATOR.join(texts),
        cased_starts=_starts(lengths, len(_CASED_SEPARATOR)),
    )


def split_tokens(batch: JoinedBatch) -> list[str]:
    """Every token in order, with `DOC_BREAK` between documents.

    ASCII text also yields one-character tokens (a cheaper split than the regex);
    callers map `ASCII_SINGLE_CHARACTERS` to an id they ignore.
    """
    if batch.lower_joined.isascii():
        return batch.lower_joined.translate(_ASCII_NON_WORD_TO_SPACE).split()
    return TOKEN_RE.findall(batch.lower_joined)


def count_contacts(contact: ContactPattern, batch: JoinedBatch, codes: CodePoints) -> np.ndarray:
    """`contact.count` of each lower-cased document."""
    if contact.digit_chain:
        counts = np.zeros(len(batch))
        for doc in codes.documents_with_digit_chain(contact.digit_chain):
            counts[doc] = contact.count(batch.lowered[doc])
        return counts
    docs = [
        doc
        for pattern in contact.patterns
        for doc in _documents_of(pattern, batch.lower_joined, batch.lower_starts)
    ]
    return np.bincount(np.asarray(docs, dtype=np.intp), minlength=len(batch)).astype(np.float64)


@dataclass(frozen=True, slots=True)
class CodePoints:
    """The cased join as an array of code points, for character-class counts in numpy."""

    values: np.ndarray
    starts: np.ndarray

    @classmethod
    def of(cls, batch: JoinedBatch) -> CodePoints:
        # surrogatepass: a lone surrogate (valid in a Python str, and in JSON's \ud800) is
        # one code unit like any other character, so offsets still line up.
        raw = batch.cased_joined.encode("utf-32-le", "surrogatepass")
        values = np.frombuffer(raw, dtype=np.uint32)
        return cls(values=values, starts=batch.cased_starts)

    def documents_with_digit_chain(self, chain: DigitChain) -> set[int]:
        """Documents holding `chain.digits` digits, each within `max_gap` of the one before."""
        positions = np.flatnonzero(self.in_ranges((("0", "9"),)))
        if positions.size < chain.digits:
            return set()
        # Separators between documents are wider than any gap, so no chain spans two.
        chain_of_digit = np.cumsum(np.concatenate(([0], np.diff(positions) > chain.max_gap)))
        first_digit = np.flatnonzero(np.concatenate(([True], np.diff(chain_of_digit) > 0)))
        lengths = np.diff(np.append(first_digit, positions.size))
        long_chain_starts = positions[first_digit[lengths >= chain.digits]]
        return set(self._docs_at(long_chain_starts).tolist())

    def in_ranges(self, ranges: tuple[tuple[str, str], ...]) -> np.ndarray:
        """Whether each character lies in one of the inclusive `(low, high)` ranges."""
        masks = [
            # Unsigned subtraction wraps below `low`, so one comparison tests both ends.
            (self.values - np.uint32(ord(low))) <= np.uint32(ord(high) - ord(low))
            for low, high in ranges
        ]
        return np.logical_or.reduce(masks) if len(masks) > 1 else masks[0]

    def count_per_doc(self, mask: np.ndarray) -> np.ndarray:
        return self._per_doc(np.flatnonzero(mask))

    def count_runs_per_doc(self, mask: np.ndarray, min_length: int) -> np.ndarray:
        """Maximal runs of `mask` at least `min_length` long, per document."""
        padded = np.concatenate(([False], mask, [False]))
        edges = np.flatnonzero(padded[1:] != padded[:-1])
        run_starts, run_ends = edges[0::2], edges[1::2]
        return self._per_doc(run_starts[run_ends - run_starts >= min_length])

    def _per_doc(self, positions: np.ndarray) -> np.ndarray:
        return np.bincount(self._docs_at(positions), minlength=len(self.starts)).astype(np.float64)

    def _docs_at(self, positions: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.starts, positions, side="right") - 1


def _documents_of(pattern: re.Pattern[str], joined: str, starts: np.ndarray) -> list[int]:
    positions = [match.start() for match in pattern.finditer(joined)]
    if not positions:
        return []
    return (np.searchsorted(starts, positions, side="right") - 1).tolist()


def _lengths(texts: list[str]) -> np.ndarray:
    return np.fromiter(map(len, texts), dtype=np.intp, count=len(texts))


def _starts(lengths: np.ndarray, separator_length: int) -> np.ndarray:
    starts = np.zeros(len(lengths), dtype=np.intp)
    np.cumsum(lengths[:-1] + separator_length, out=starts[1:])
    return starts
