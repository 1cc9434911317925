"""Ads that reach every branch of the fast scorer, for checking it against the pipeline on load."""

from __future__ import annotations

from shared.domain import Ad
from shared.model.synthetic import generate_ads

_PROBE_SEED = 7
_PROBE_SYNTHETIC = 48


def _ad(
    item_id: int,
    name: str,
    description: str,
    category: int = 3,
    images_qty: int = 2,
    is_verified_seller: bool = True,
) -> Ad:
    return Ad(
        item_id=item_id,
        seller_id=1,
        is_verified_seller=is_verified_seller,
        name=name,
        description=description,
        category=category,
        images_qty=images_qty,
    )


def edge_case_ads() -> list[Ad]:
    """Empty, odd and long texts, contacts of every kind, shouting, unknown categories and
    numbers past the caps; ASCII only."""
    return [
        _ad(1, "", ""),
        _ad(2, "a", "b c d e", images_qty=0, is_verified_seller=False),
        _ad(
            3,
            "IPHONE 13 BEST PRICE!!!",
            "BUY NOW!!! CALL +7 912 345-67-89 or 8(912)3456789",
            category=99_999,
        ),
        _ad(4, "bike", "write ivan.petrov@mail.com or @ivan_bikes, see www.bikes-shop.com"),
        _ad(5, "sofa", "https://bit.ly/x2 and http://localhost/x sofa.ru", images_qty=1000),
        _ad(6, "sofa sofa sofa", "sofa sofa sofa sofa sofa", category=0),
        _ad(7, "\t\n", "  .  ", images_qty=0, is_verified_seller=False),
        _ad(8, "x_y__z 12 345", "_ __ 9 99 999 1234567890123456789012345"),
        _ad(9, "car", "DOCBREAK docbreak Docbreak"),
        # Past the lengths the signals read (features.MAX_TEXT_CHARS).
        _ad(10, "road bike", "Serviced, new chain and tyres. " * 100),
        # Blanks the lengths leave out, and the shortest digit run read as a phone.
        _ad(11, "ok", "ok" + " " * 40),
        _ad(12, "call", "call 912 345 678 today"),
    ]


def non_ascii_ads() -> list[Ad]:
    """Texts that take the regex tokeniser: Cyrillic, accents, symbols, case-changing letters."""
    return [
        _ad(
            20, "Продам iPhone", "СРОЧНО!!! Звоните +7 912 345 67 89, пишите в телеграм @prodam_bot"
        ),
        _ad(21, "Café crème", "naïve façade — 100 € · «ёлка» ЁЛКА Ёж", images_qty=0),
        _ad(22, "İstanbul KİLİM", "ß ǅ ﬁ Ω ω ½ ² ٣ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 😀 emoji", category=61),
        # A lone surrogate, which a JSON body may carry ("\ud800").
        _ad(23, "Bike \ud800", "CALL 8 912 345 67 89 \udfff now"),
    ]


def probe_batches() -> list[list[Ad]]:
    """Batches to score: ASCII only (the split tokeniser) and mixed (the regex tokeniser)."""
    synthetic = generate_ads(_PROBE_SYNTHETIC, seed=_PROBE_SEED).ads
    ascii_only = synthetic + edge_case_ads()
    return [ascii_only, non_ascii_ads() + ascii_only, [ascii_only[0]]]
