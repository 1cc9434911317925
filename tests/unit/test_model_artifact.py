"""Saving and loading the artifact: hashes, versions, the type allow-list, reproducible bytes."""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path

import pytest
import sklearn
import skops.io
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from shared.errors import ModelUnavailable, TemporaryError
from shared.model import load_model
from shared.model.artifact import TRUSTED_TYPES, _write_atomically, save_model, sha256_hex
from shared.model.canonical_skops import canonical_skops_bytes
from shared.model.card import ARTIFACT_FILE, CARD_FILE, ModelCard, model_version
from shared.model.features import ad_text, ads_to_rows
from shared.model.pipeline import build_moderation_pipeline
from shared.model.synthetic import generate_ads
from shared.model.training import train_model


@pytest.fixture(scope="module")
def trained():
    return train_model(generate_ads(1200, seed=5), date="2024-02-03", progress=False)


@pytest.fixture
def model_dir(tmp_path: Path, trained) -> Path:
    save_model(tmp_path, trained.pipeline, trained.draft)
    return tmp_path


def _save_with_a_matching_card(directory: Path, pipeline, trained) -> str:
    """`pipeline` as the artifact, under a card whose hash and version match it: what the
    card's checks let through, for the checks after them. Returns the version."""
    data = skops.io.dumps(pipeline)
    (directory / ARTIFACT_FILE).write_bytes(data)
    card = trained.draft.complete(
        version=model_version(trained.draft.created, sha256_hex(data)),
        artifact={"file": ARTIFACT_FILE, "format": "skops", "sha256": sha256_hex(data)},
    )
    (directory / CARD_FILE).write_text(card.to_json())
    return card.version


def _edit_card(directory: Path, **changes: object) -> None:
    card = json.loads((directory / CARD_FILE).read_text())
    card.update(changes)
    (directory / CARD_FILE).write_text(json.dumps(card))


def test_a_saved_model_loads_with_the_version_and_threshold_of_its_card(model_dir, trained):
    card = ModelCard.from_json((model_dir / CARD_FILE).read_text())

    model = load_model(str(model_dir))

    assert model.version == card.version
    assert model.threshold == trained.draft.decision_threshold
    assert card.version.startswith("moderation-2024-02-03-")
    assert card.version.endswith(sha256_hex((model_dir / ARTIFACT_FILE).read_bytes())[:8])


def test_the_card_records_versions_features_threshold_metrics_data_and_hash(model_dir):
    card = json.loads((model_dir / CARD_FILE).read_text())

    assert card["sklearn_version"] == sklearn.__version__
    assert card["artifact"]["sha256"] == sha256_hex((model_dir / ARTIFACT_FILE).read_bytes())
    assert 0 < card["decision_threshold"] < 1
    assert {"text", "category", "signals"} <= set(card["features"])
    assert {"roc_auc", "precision", "recall"} <= set(card["metrics"]["holdout"])
    assert card["baseline"]["metrics"]["holdout"]["roc_auc"] > 0
    assert card["training_data"]["kind"] == "synthetic"
    assert card["training_data"]["seed"] == 5


def test_a_tampered_artifact_is_refused_by_its_hash_as_a_temporary_error(model_dir):
    artifact = model_dir / ARTIFACT_FILE
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0x01
    artifact.write_bytes(bytes(data))

    with pytest.raises(ModelUnavailable, match="sha256") as raised:
        load_model(str(model_dir))

    assert "tampered" in str(raised.value)
    assert isinstance(raised.value, TemporaryError)


def test_an_artifact_whose_hash_differs_from_its_cards_in_the_last_digit_is_refused(model_dir):
    card = json.loads((model_dir / CARD_FILE).read_text())
    digest = card["artifact"]["sha256"]
    # The version names the hash's first digits only, so it still matches the card.
    _edit_card(
        model_dir, artifact={**card["artifact"], "sha256": digest[:-1] + "0f"[digest[-1] == "0"]}
    )

    with pytest.raises(ModelUnavailable, match="sha256"):
        load_model(str(model_dir))


def test_a_card_from_another_scikit_learn_minor_version_is_refused_before_its_artifact_is_read(
    model_dir,
):
    # From S3 the artifact is the one large download: the card alone says it cannot load.
    _edit_card(model_dir, sklearn_version="1.4.2")
    (model_dir / ARTIFACT_FILE).unlink()

    with pytest.raises(ModelUnavailable, match=r"trained with scikit-learn 1\.4\.2"):
        load_model(str(model_dir))


def test_a_card_from_another_scikit_learn_minor_version_is_refused_naming_both(model_dir):
    _edit_card(model_dir, sklearn_version="1.4.2")

    with pytest.raises(ModelUnavailable) as raised:
        load_model(str(model_dir))

    assert "1.4.2" in str(raised.value)
    assert sklearn.__version__ in str(raised.value)


def test_a_model_trained_on_other_signals_is_refused_with_what_to_do(model_dir):
    card = json.loads((model_dir / CARD_FILE).read_text())
    # As the signals were named before their caps, with the category read as a number.
    before_the_caps = ["is_verified_seller", "images_qty/10", "len(description)/1000"]
    before_the_caps += ["category/100", *card["features"]["signals"][3:]]
    _edit_card(model_dir, features={**card["features"], "signals": before_the_caps})

    with pytest.raises(ModelUnavailable) as raised:
        load_model(str(model_dir))

    assert "'category/100'" in str(raised.value)
    assert "train it again" in str(raised.value)


def test_a_model_trained_on_the_same_signals_in_another_order_is_refused(model_dir):
    # Its weights would be applied to the wrong columns.
    card = json.loads((model_dir / CARD_FILE).read_text())
    first, second, *rest = card["features"]["signals"]
    _edit_card(model_dir, features={**card["features"], "signals": [second, first, *rest]})

    with pytest.raises(ModelUnavailable, match="train it again"):
        load_model(str(model_dir))


def test_a_card_whose_features_are_not_an_object_is_refused(model_dir):
    _edit_card(model_dir, features=None)

    with pytest.raises(ModelUnavailable, match="expected features to be an object"):
        load_model(str(model_dir))


@pytest.mark.parametrize("threshold", [1.01, -0.01])
def test_a_card_whose_threshold_is_not_a_probability_is_refused(model_dir, threshold):
    # A threshold above 1 would clear every ad, one below 0 flag every ad.
    _edit_card(model_dir, decision_threshold=threshold)

    with pytest.raises(ModelUnavailable, match="expected decision_threshold between 0 and 1"):
        load_model(str(model_dir))


def test_a_card_from_another_scikit_learn_patch_release_loads(model_dir):
    major, minor, *_ = sklearn.__version__.split(".")
    _edit_card(model_dir, sklearn_version=f"{major}.{minor}.99")

    model = load_model(str(model_dir))

    assert model.version


@pytest.mark.parametrize(
    ("function", "named"),
    [(os.system, "system"), (ad_text, "shared.model.features.ad_text")],  # ours too
)
def test_an_artifact_naming_a_callable_outside_the_allow_list_is_refused(
    tmp_path, trained, function, named
):
    hostile = Pipeline(
        [("features", FunctionTransformer(function)), ("classifier", LogisticRegression())]
    )
    _save_with_a_matching_card(tmp_path, hostile, trained)

    with pytest.raises(ModelUnavailable, match=rf"allow-list: .*{re.escape(named)}"):
        load_model(str(tmp_path))


@pytest.mark.parametrize("card_format", [2, "1", True])
def test_a_card_of_another_format_is_refused_rather_than_half_read(model_dir, card_format):
    # A newer card's own fields (a threshold per category, say) would otherwise be
    # dropped without a word, and its model served on the old rules.
    _edit_card(model_dir, card_format=card_format, decision_threshold_by_category={"3": 0.99})

    with pytest.raises(ModelUnavailable, match=r"card_format|model card format 2"):
        load_model(str(model_dir))


def test_a_card_written_before_its_format_was_recorded_loads_as_format_1(model_dir):
    card = json.loads((model_dir / CARD_FILE).read_text())
    assert card.pop("card_format") == 1  # what a save writes now
    (model_dir / CARD_FILE).write_text(json.dumps(card))

    assert load_model(str(model_dir)).version == card["version"]


def test_a_card_whose_version_does_not_name_its_artifact_is_refused(model_dir):
    # Every verdict carries the card's version, so it must be the artifact's own.
    _edit_card(model_dir, version="moderation-2099-01-01-deadbeef")

    with pytest.raises(ModelUnavailable, match=r"expected version 'moderation-.*got"):
        load_model(str(model_dir))


def test_a_card_that_is_not_json_makes_the_model_unavailable(model_dir):
    (model_dir / CARD_FILE).write_text("{not json")

    with pytest.raises(ModelUnavailable, match="expected the model card to be JSON"):
        load_model(str(model_dir))


@pytest.mark.parametrize("file", ["../model.skops", "C:\\models\\model.skops"])
def test_a_card_pointing_outside_its_directory_is_refused(model_dir, file):
    # A backslash is a separator on Windows, where a card may have been written.
    _edit_card(model_dir, artifact={"file": file, "format": "skops", "sha256": "0"})

    with pytest.raises(ModelUnavailable, match="plain name"):
        load_model(str(model_dir))


def test_a_missing_model_directory_makes_the_model_unavailable(tmp_path):
    with pytest.raises(ModelUnavailable, match=r"no model_card\.json"):
        load_model(str(tmp_path / "absent"))


def test_a_missing_artifact_makes_the_model_unavailable(model_dir):
    (model_dir / ARTIFACT_FILE).unlink()

    with pytest.raises(ModelUnavailable, match=r"no model\.skops"):
        load_model(str(model_dir))


def test_the_same_pipeline_saves_to_the_same_bytes(tmp_path, trained):
    first, second = tmp_path / "first", tmp_path / "second"

    save_model(first, trained.pipeline, trained.draft)
    save_model(second, trained.pipeline, trained.draft)

    assert (first / ARTIFACT_FILE).read_bytes() == (second / ARTIFACT_FILE).read_bytes()
    assert (first / CARD_FILE).read_bytes() == (second / CARD_FILE).read_bytes()


def test_canonical_bytes_load_to_the_same_predictions(trained):
    rows = ads_to_rows(trained.holdout_ads[:100])
    data = canonical_skops_bytes(skops.io.dumps(trained.pipeline))

    loaded = skops.io.loads(data, trusted=list(TRUSTED_TYPES))

    assert (loaded.predict_proba(rows) == trained.pipeline.predict_proba(rows)).all()


def test_an_unfitted_pipeline_whose_hash_matches_its_card_makes_the_model_unavailable(
    tmp_path, trained
):
    version = _save_with_a_matching_card(tmp_path, build_moderation_pipeline(), trained)

    with pytest.raises(ModelUnavailable, match=f"refusing model {version}"):
        load_model(str(tmp_path))


def test_two_savings_into_one_folder_at_once_each_finish_and_leave_no_temporary_file(tmp_path):
    # Two trainings saving to one folder wrote one `.partial` name, and the second
    # rename failed with FileNotFoundError.
    target = tmp_path / ARTIFACT_FILE
    payloads = [b"a" * 200_000, b"b" * 200_000]
    failures: list[BaseException] = []

    def save_often(data: bytes) -> None:
        try:
            for _ in range(50):
                _write_atomically(target, data)
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=save_often, args=(data,)) for data in payloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not any(thread.is_alive() for thread in threads), "a saver still ran after 60 s"
    assert failures == []
    assert target.read_bytes() in payloads
    assert sorted(path.name for path in tmp_path.iterdir()) == [ARTIFACT_FILE]
    assert target.stat().st_mode & 0o777 == 0o644
