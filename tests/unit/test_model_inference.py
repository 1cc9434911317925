"""The fast scorer against the sklearn pipeline, the batch API and input validation."""

from __future__ import annotations

import copy
import dataclasses
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import Pipeline

from shared.domain import Ad, Verdict
from shared.errors import InvalidFeatures
from shared.model import ModerationModel, features
from shared.model.batch_signals import AdFields, signal_matrix
from shared.model.batch_text import join_batch, split_tokens
from shared.model.compiler import (
    AGREEMENT_TOLERANCE,
    IncompatiblePipeline,
    check_agreement,
    compile_scorer,
)
from shared.model.features import (
    ad_text,
    ads_to_rows,
    moderator_signals,
    signal_features,
    tokenize,
)
from shared.model.inference import PER_AD_MAX_BATCH
from shared.model.model import ModerationModel as _Model
from shared.model.probes import edge_case_ads, non_ascii_ads, probe_batches
from shared.model.synthetic import generate_ads
from shared.model.training import train_model

# Characters that hit every pattern: digits and phone separators, "@", dots, capitals
# (Latin and Cyrillic), word and non-word characters, blanks and case-changing letters.
_TRICKY = [*"aZ09 _-+.()@:/!\t\nwhtpsЯяЁёİßǅ€—", "www.", "http://", ".com", "DOCBREAK"]
_texts = st.lists(st.sampled_from(_TRICKY), max_size=40).map("".join) | st.text(max_size=60)


@pytest.fixture(scope="module")
def trained():
    return train_model(generate_ads(1500, seed=3), date="2024-01-01", progress=False)


@pytest.fixture(scope="module")
def model(trained) -> ModerationModel:
    card = trained.draft.complete(version="moderation-test", artifact={})
    return _Model(card, compile_scorer(trained.pipeline))


def _ad(item_id: int = 1, **fields: object) -> Ad:
    values = {
        "seller_id": 1,
        "is_verified_seller": True,
        "name": "bike",
        "description": "good bike, pickup in the centre",
        "category": 42,
        "images_qty": 3,
    }
    values.update(fields)
    return Ad(item_id=item_id, **values)  # type: ignore[arg-type]


@pytest.mark.parametrize("kernel", ["vectorised", "one_by_one"])
def test_fast_scorer_matches_predict_proba_on_the_holdout_to_1e_9(trained, kernel):
    scorer = compile_scorer(trained.pipeline)

    fast = getattr(scorer, kernel)(trained.holdout_ads)
    reference = trained.pipeline.predict_proba(ads_to_rows(trained.holdout_ads))[:, 1]

    assert np.max(np.abs(fast - reference)) <= AGREEMENT_TOLERANCE


def test_a_per_ad_kernel_that_drifts_from_the_pipeline_is_refused(trained):
    scorer = compile_scorer(trained.pipeline)
    drifted = dataclasses.replace(
        scorer, per_ad=dataclasses.replace(scorer.per_ad, intercept=scorer.intercept + 1e-6)
    )

    with pytest.raises(IncompatiblePipeline, match="one-by-one kernel"):
        check_agreement(drifted, trained.pipeline, trained.holdout_ads[:20])


@pytest.mark.parametrize("size", [1, PER_AD_MAX_BATCH, PER_AD_MAX_BATCH + 1])
def test_batches_on_either_side_of_the_kernel_switch_score_alike(trained, size):
    scorer = compile_scorer(trained.pipeline)
    ads = trained.holdout_ads[:size]

    chosen = scorer.probabilities(ads)

    assert chosen.shape == (size,)
    assert np.max(np.abs(chosen - scorer.vectorised(ads))) <= 1e-12
    assert np.max(np.abs(chosen - scorer.one_by_one(ads))) <= 1e-12


@pytest.mark.parametrize("batch", probe_batches(), ids=["ascii", "mixed", "single"])
def test_fast_scorer_matches_predict_proba_on_edge_cases_and_non_ascii_text(trained, batch):
    scorer = compile_scorer(trained.pipeline)

    gap = check_agreement(scorer, trained.pipeline, batch)

    assert gap <= AGREEMENT_TOLERANCE


@settings(max_examples=150, deadline=None)
@given(
    names=st.lists(_texts, min_size=1, max_size=6),
    descriptions=st.lists(_texts, min_size=6, max_size=6),
)
def test_fast_scorer_matches_predict_proba_on_arbitrary_text(trained, names, descriptions):
    ads = [_ad(i, name=name, description=descriptions[i]) for i, name in enumerate(names)]
    scorer = compile_scorer(trained.pipeline)

    gap = check_agreement(scorer, trained.pipeline, ads)

    assert gap <= AGREEMENT_TOLERANCE


@settings(max_examples=300, deadline=None)
@given(texts=st.lists(_texts, min_size=1, max_size=5))
def test_batch_tokens_are_the_default_sklearn_analyzer_tokens_of_each_ad(texts):
    analyzer = TfidfVectorizer().build_analyzer()
    batch = join_batch(texts)

    tokens = [t for t in split_tokens(batch) if len(t) > 1]
    per_text = [t for text in texts for t in ([*analyzer(text), "DOCBREAK"])][:-1]

    assert tokens == per_text
    assert [tokenize(text) for text in texts] == [analyzer(text) for text in texts]


@settings(max_examples=200, deadline=None)
@given(names=st.lists(_texts, min_size=1, max_size=5), description=_texts)
# Random text seldom pads a short description with blanks or holds exactly the nine
# digits a phone number needs; the batch kernel reads both by its own code.
@example(names=["a", "b", "c"], description="ok" + " " * 40)
@example(names=["a", "b", "c"], description="call 912 345 678 today")
def test_batch_signals_equal_the_per_ad_signals(names, description):
    ads = [_ad(i, name=name, description=description) for i, name in enumerate(names)]
    batch = join_batch([ad_text(ad.name, ad.description) for ad in ads])
    tokens = [tokenize(text) for text in batch.texts]
    counts = np.array([len(t) for t in tokens])
    distinct = np.array([len(set(t)) for t in tokens])

    batch_signals = signal_matrix(AdFields.of(ads), batch, counts, distinct)
    per_ad = signal_features(ads_to_rows(ads))

    np.testing.assert_allclose(batch_signals, per_ad, rtol=1e-12, atol=0)


def test_a_run_of_cyrillic_capitals_with_yo_counts_as_shouting():
    # Ё lies outside А-Я in Unicode, so it has a range of its own in CAPITALS.
    ad = _ad(name="ЛЁД", description="продаю лёд для коктейлей")
    tokens = tokenize(ad_text(ad.name, ad.description))

    signals = moderator_signals(
        ad.name, ad.description, ad.images_qty, ad.is_verified_seller, tokens
    )

    assert signals[features.SIGNAL_FEATURES.index("shouting_share")] == 1 / len(tokens)


def test_the_per_ad_signals_see_contacts_shouting_and_bare_ads():
    ad = _ad(
        name="IPHONE BEST PRICE!!!",
        description="call +7 912 345-67-89, ivan@mail.de, @ivan_shop, www.bikes.com",
        images_qty=0,
    )

    signals = dict(
        zip(
            ("phones", "emails", "links", "handles"),
            moderator_signals(
                ad.name,
                ad.description,
                ad.images_qty,
                ad.is_verified_seller,
                tokenize(ad_text(ad.name, ad.description)),
            )[4:8],
            strict=True,
        )
    )

    assert signals == {"phones": 1.0, "emails": 1.0, "links": 2.0, "handles": 1.0}


def test_single_ads_score_the_same_as_in_a_batch(model, trained):
    ads = trained.holdout_ads[:50] + edge_case_ads() + non_ascii_ads()

    batch = model.predict(ads)
    singles = [model.predict([ad])[0] for ad in ads]

    assert [v.probability for v in singles] == pytest.approx(
        [v.probability for v in batch], abs=1e-12
    )
    assert [v.is_violation for v in singles] == [v.is_violation for v in batch]


@pytest.mark.parametrize("size", [1, PER_AD_MAX_BATCH])
def test_a_request_sized_batch_gets_predict_batchs_verdicts_as_python_values(model, trained, size):
    ads = trained.holdout_ads[:size]

    verdicts = model.predict(ads)
    columns = model.predict_batch(ads)

    assert [v.probability for v in verdicts] == columns.probability.tolist()
    assert [v.is_violation for v in verdicts] == columns.is_violation.tolist()
    assert all(type(v.probability) is float and type(v.is_violation) is bool for v in verdicts)


def test_an_empty_batch_gives_no_verdicts(model):
    verdicts = model.predict([])

    assert verdicts == []


def test_every_verdict_carries_its_item_probability_threshold_decision_and_version(model, trained):
    ads = trained.holdout_ads[:200]

    verdicts = model.predict(ads)

    assert [v.item_id for v in verdicts] == [ad.item_id for ad in ads]
    assert all(isinstance(v, Verdict) and v.model_version == "moderation-test" for v in verdicts)
    assert all(type(v.probability) is float and 0 <= v.probability <= 1 for v in verdicts)
    assert all(v.is_violation == (v.probability >= model.threshold) for v in verdicts)
    assert {v.is_violation for v in verdicts} == {True, False}


@pytest.mark.parametrize("size", [1, PER_AD_MAX_BATCH + 1], ids=["per-ad", "batch"])
def test_a_probability_equal_to_the_threshold_is_a_violation_in_either_kernel(model, trained, size):
    ads = [_ad(item_id) for item_id in range(1, size + 1)]
    probability = model.predict(ads)[0].probability
    card = dataclasses.replace(model.card, decision_threshold=probability)
    at_threshold = _Model(card, compile_scorer(trained.pipeline))

    verdicts = at_threshold.predict(ads)

    assert [v.probability for v in verdicts] == [probability] * size
    assert all(v.is_violation for v in verdicts)


@pytest.mark.parametrize("size", [1, PER_AD_MAX_BATCH + 1], ids=["per-ad", "batch"])
def test_an_ad_that_takes_the_deal_off_the_platform_scores_high_and_a_plain_one_low(model, size):
    # The probability is P(violation), not P(ok): a kernel turned around would still
    # agree with itself, and with the threshold it is compared against.
    spam = _ad(
        name="CALL NOW!!! BEST PRICE",
        description="call +1 555 0100 200 or write to cheap@deals.biz",
        is_verified_seller=False,
        images_qty=0,
    )
    plain = _ad(name="Road bike, 54 cm frame", description="Aluminium frame, serviced in May.")

    spam_verdicts, plain_verdicts = model.predict([spam] * size), model.predict([plain] * size)

    assert all(v.is_violation and v.probability > 0.9 for v in spam_verdicts)
    assert all(not v.is_violation and v.probability < 0.5 for v in plain_verdicts)


def test_the_loaded_model_cannot_be_changed(model):
    with pytest.raises(AttributeError, match="immutable"):
        model.threshold = 0.0  # type: ignore[misc]


def test_concurrent_predictions_give_the_same_verdicts(model, trained):
    batches = [trained.holdout_ads[i : i + 40] for i in range(0, 320, 40)]
    expected = [model.predict(batch) for batch in batches]

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(model.predict, batches * 3))

    assert results == expected * 3


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": None}, "expected name to be str, got NoneType"),
        ({"description": 5}, "expected description to be str, got int"),
        ({"category": "3"}, "expected category to be int, got str"),
        ({"category": True}, "expected category to be int, got bool"),
        ({"category": -1}, "expected category between 0 and"),
        ({"images_qty": -1}, "expected images_qty between 0 and 1000, got -1"),
        ({"images_qty": 1001}, "expected images_qty between 0 and 1000, got 1001"),
        ({"images_qty": 2.0}, "expected images_qty to be int, got float"),
        ({"is_verified_seller": 1}, "expected is_verified_seller to be bool, got int"),
    ],
)
def test_invalid_features_are_refused_naming_the_ad_and_field(model, fields, message):
    ads = [_ad(1), _ad(7)._replace(**fields)]

    with pytest.raises(InvalidFeatures, match=re.escape(message)) as raised:
        model.predict(ads)

    assert "ad 7" in str(raised.value)


def test_something_that_is_not_an_ad_is_invalid_features(model):
    with pytest.raises(InvalidFeatures, match="expected an Ad, got dict"):
        model.predict([{"item_id": 1}])  # type: ignore[list-item]


def test_a_pipeline_of_another_shape_is_not_compiled(trained):
    pipeline = Pipeline([("classifier", trained.pipeline.named_steps["classifier"])])

    with pytest.raises(IncompatiblePipeline, match="expected steps"):
        compile_scorer(pipeline)


def test_a_vectorizer_setting_the_scorer_does_not_reproduce_is_refused(trained):
    pipeline = copy.deepcopy(trained.pipeline)
    text = pipeline.named_steps["features"].named_transformers_["text"]
    text.named_steps["tfidf"].sublinear_tf = True

    with pytest.raises(IncompatiblePipeline, match="sublinear_tf"):
        compile_scorer(pipeline)
