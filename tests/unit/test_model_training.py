"""Training on the synthetic ads: quality against the seed model, and reproducibility."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from shared.domain import Ad
from shared.model.features import ads_to_rows
from shared.model.synthetic import DEFAULT_SIZE, RULES_DATE, generate_ads
from shared.model.training import model_date, split_holdout, train_model


@pytest.fixture(scope="module")
def default_training():
    data = generate_ads()
    return data, train_model(data, date=model_date(data), progress=False)


def test_the_model_reaches_a_roc_auc_of_095_on_the_default_synthetic_holdout(default_training):
    data, trained = default_training

    probabilities = trained.pipeline.predict_proba(ads_to_rows(trained.holdout_ads))[:, 1]
    auc = roc_auc_score(trained.holdout_labels, probabilities)

    assert len(data.ads) == DEFAULT_SIZE
    assert 0.95 <= auc < 0.995, "the task must be learnable but not trivially separable"
    assert trained.draft.metrics["holdout"]["roc_auc"] == pytest.approx(auc, abs=1e-4)


def test_the_seed_four_feature_model_is_clearly_worse_on_the_same_split(default_training):
    _, trained = default_training

    ours = trained.draft.metrics["holdout"]["roc_auc"]
    seed = trained.draft.baseline["metrics"]["holdout"]["roc_auc"]

    assert seed < ours - 0.15
    assert trained.draft.baseline["features"] == [
        "is_verified_seller",
        "images_qty/10",
        "len(description)/1000",
        "category/100",
    ]


def test_the_card_draft_carries_the_threshold_and_the_training_split(default_training):
    data, trained = default_training

    draft = trained.draft

    assert 0 < draft.decision_threshold < 1
    assert draft.training_data["train_size"] + draft.training_data["holdout_size"] == len(data.ads)
    assert draft.created == RULES_DATE
    assert draft.metrics["fast_scorer_max_abs_gap"] <= 1e-9


def test_two_trainings_on_the_same_seed_give_identical_probabilities():
    data = generate_ads(1500, seed=21)
    probe = ads_to_rows(generate_ads(300, seed=22).ads)

    first = train_model(data, date=RULES_DATE, progress=False)
    second = train_model(generate_ads(1500, seed=21), date=RULES_DATE, progress=False)

    np.testing.assert_array_equal(
        first.pipeline.predict_proba(probe), second.pipeline.predict_proba(probe)
    )
    assert first.draft == second.draft


def test_a_count_spelled_out_is_no_violation_but_a_phone_number_spelled_out_is(default_training):
    # The obfuscated phone numbers spell digits out; when honest ads never did, the model
    # learnt any digit word as a violation, and flagged "Sofa, three seats".
    _, trained = default_training
    sofa = Ad(1, 1, True, "Sofa, three seats", "Grey fabric, two years old. Pickup only.", 27, 2)
    hidden_phone = sofa._replace(description="Grey fabric. Call eight nine one six two zero four")
    threshold = trained.draft.decision_threshold

    honest, obfuscated = trained.pipeline.predict_proba(ads_to_rows([sofa, hidden_phone]))[:, 1]

    assert honest < threshold <= obfuscated, (honest, threshold, obfuscated)


_LONG_CAR_AD = (
    "Second owner, bought from the first one three years ago. Serviced every year at the "
    "official dealer, the stamps are in the book and the receipts in a folder. New brakes "
    "and discs last spring, summer and winter tyres on their own rims. Automatic gearbox "
    "shifts smoothly, the air conditioning was refilled in June. Small dent on the rear "
    "bumper, see the photos; no rust anywhere. Non-smoking car, no pets. Both keys, the "
    "manual and the service book are there. Test drive on the weekend, bring your licence. "
    "Price is fair for the condition, I do not exchange. Pickup in the north of the city. "
    "The car has always been parked in a garage, so the paint is in very good shape for its "
    "age. Recent oil change, new battery this winter, and the timing belt was replaced at "
    "90 000 km. Serious questions are welcome in the chat here on the site."
)


@pytest.mark.parametrize(
    ("honest", "violation"),
    [
        (  # Only violations said "any", "at" or "cash" in the generator's first rules.
            Ad(1, 1, False, "Handyman", "Any small jobs around the house. Cheap and quick.", 68, 0),
            Ad(1, 1, False, "Handyman", "Any small jobs. Call 8 912 345 67 89", 68, 0),
        ),
        (  # No honest description ran past ~300 characters, and length is a feature.
            Ad(1, 1, True, "Skoda Octavia 2016", _LONG_CAR_AD, 12, 6),
            Ad(1, 1, True, "Skoda Octavia 2016", _LONG_CAR_AD + " Call 8 912 345 67 89", 12, 6),
        ),
        (  # Every handle had its "@", which the handles signal counts.
            Ad(1, 1, False, "Sofa bed", "Good condition, grey. Write in the chat here.", 27, 3),
            Ad(
                1,
                1,
                False,
                "Sofa bed",
                "Good condition, grey. Write in Telegram: sofa_bed_ivan",
                27,
                3,
            ),
        ),
    ],
    ids=["everyday-words", "long-description", "handle-without-at"],
)
def test_honest_ads_in_the_forms_abuse_uses_too_are_told_from_the_abuse(
    default_training, honest, violation
):
    _, trained = default_training
    threshold = trained.draft.decision_threshold

    fine, abuse = trained.pipeline.predict_proba(ads_to_rows([honest, violation]))[:, 1]

    assert fine < threshold <= abuse, (fine, threshold, abuse)


def test_a_violation_stays_one_in_a_category_far_past_those_trained_on(default_training):
    # The category read as a number, as the seed's model reads it, cleared every
    # violation from category 20,000 on.
    _, trained = default_training
    violations = [
        ad for ad, y in zip(trained.holdout_ads, trained.holdout_labels, strict=True) if y
    ]
    far_away = [ad._replace(category=2**31 - 1) for ad in violations]

    as_they_are, moved = (
        trained.pipeline.predict_proba(ads_to_rows(ads))[:, 1] >= trained.draft.decision_threshold
        for ads in (violations, far_away)
    )

    assert moved.sum() >= as_they_are.sum() > 0.8 * len(violations)


def test_honest_ads_far_longer_than_those_trained_on_are_not_taken_for_violations(
    default_training,
):
    # Length read without a cap made every description of 3,000 characters a violation.
    _, trained = default_training
    honest = [
        ad for ad, y in zip(trained.holdout_ads, trained.holdout_labels, strict=True) if not y
    ]
    others = itertools.cycle(ad.description for ad in reversed(honest))
    lengthened = []
    for ad in honest:
        description = ad.description
        while len(description) < 3000:
            description += " " + next(others)
        lengthened.append(ad._replace(description=description[:3000]))

    probabilities = trained.pipeline.predict_proba(ads_to_rows(lengthened))[:, 1]

    assert (probabilities >= trained.draft.decision_threshold).mean() < 0.05


def test_the_generator_gives_the_same_ads_for_the_same_seed_and_others_for_another():
    first, again, other = generate_ads(500, seed=1), generate_ads(500, seed=1), generate_ads(500, 2)

    assert first == again
    assert first.ads != other.ads


def test_the_generator_produces_every_kind_of_violation_and_some_label_noise():
    data = generate_ads(5000, seed=4)

    kinds = data.source["kinds"]

    for kind in ("off_platform_contact", "prohibited_goods", "empty_scam", "shouting_spam"):
        assert kinds[kind] > 100
    assert any(kind.endswith("+flipped") for kind in kinds)
    assert 0.2 < data.source["violation_rate"] < 0.4


def test_the_holdout_split_is_stratified_and_the_same_every_time():
    data = generate_ads(2000, seed=8)

    train, holdout = split_holdout(data)
    train_again, holdout_again = split_holdout(data)

    labels = np.asarray(data.labels)
    assert np.array_equal(holdout, holdout_again) and np.array_equal(train, train_again)
    assert len(holdout) == 500
    assert abs(labels[holdout].mean() - labels[train].mean()) < 0.01


@pytest.mark.parametrize(
    ("kind", "explicit", "expected"),
    [
        ("synthetic", None, RULES_DATE),
        ("synthetic", "2025-06-30", "2025-06-30"),
        ("csv", "2025-01-02", "2025-01-02"),
    ],
)
def test_the_version_date_is_explicit_or_the_synthetic_rules_date(kind, explicit, expected):
    data = generate_ads(10, seed=1)
    data.source["kind"] = kind

    date = model_date(data, explicit)

    assert date == expected
