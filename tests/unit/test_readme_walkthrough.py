"""The README walkthrough's verdicts are those the default model gives its ads.

A reader compares the walkthrough with what their own run prints; a probability quoted
from an older model (it happened once) makes a working service look broken.
"""

from __future__ import annotations

import re
from pathlib import Path

from shared.domain import Ad
from shared.model.loading import load_model
from shared.runner.demo_data import ADS, SELLERS
from shared.settings import DEFAULT_MODEL_URI

README = Path(__file__).resolve().parents[2] / "README.md"
# The ad the walkthrough gives /predict in full.
PREDICT_AD = Ad(
    item_id=100,
    seller_id=2,
    is_verified_seller=False,
    name="CALL NOW!!! BEST PRICE",
    description="write to cheap@deals.biz",
    category=3,
    images_qty=0,
)


def walkthrough() -> str:
    section = README.read_text().split("\n## Walkthrough\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```bash\n", 1)[1].split("```", 1)[0]


def quoted_verdicts() -> dict[int, tuple[bool, str]]:
    """item_id -> (is_violation, the probability's quoted digits), from the answers shown."""
    answers = re.findall(
        r'"item_id":(\d+),(?:"status":"\w+",)?"is_violation":(true|false),'
        r'"probability":(\d\.\d+)\.\.\.',
        walkthrough(),
    )
    return {int(item): (flag == "true", digits) for item, flag, digits in answers}


def demo_ad(item_id: int) -> Ad:
    verified = dict(SELLERS)
    ad_id, seller_id, name, description, category, images_qty = next(
        ad for ad in ADS if ad[0] == item_id
    )
    return Ad(
        item_id=ad_id,
        seller_id=seller_id,
        is_verified_seller=verified[seller_id],
        name=name,
        description=description,
        category=category,
        images_qty=images_qty,
    )


def test_the_walkthrough_quotes_what_the_default_model_says_of_its_ads():
    quoted = quoted_verdicts()
    assert set(quoted) == {1, 100}, "the walkthrough's verdicts are not where this test looks"
    model = load_model(DEFAULT_MODEL_URI)
    for item_id, ad in ((1, demo_ad(1)), (100, PREDICT_AD)):
        [probability] = model.probabilities([ad])
        is_violation, digits = quoted[item_id]
        assert str(float(probability)).startswith(digits), (item_id, probability, digits)
        assert (probability >= model.threshold) == is_violation, (item_id, probability)
