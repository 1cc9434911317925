"""python -m shared.model train / evaluate, and reading a user's labelled CSV."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from shared.model import compiler
from shared.model.__main__ import main
from shared.model.card import CARD_FILE
from shared.model.compiler import IncompatiblePipeline
from shared.model.dataset import REQUIRED_COLUMNS, InvalidDataset, read_labelled_csv
from shared.model.synthetic import generate_ads


def _write_csv(path: Path, n: int = 900, seed: int = 12) -> Path:
    data = generate_ads(n, seed=seed)
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(REQUIRED_COLUMNS)
        for ad, label in zip(data.ads, data.labels, strict=True):
            writer.writerow(
                [
                    ad.name,
                    ad.description,
                    ad.category,
                    ad.images_qty,
                    "true" if ad.is_verified_seller else "false",
                    label,
                ]
            )
    return path


def test_train_on_a_csv_writes_a_card_and_prints_held_out_metrics_of_both_models(tmp_path, capsys):
    data = _write_csv(tmp_path / "ads.csv")
    out = tmp_path / "model"

    code = main(
        ["--no-progress", "train", "--data", str(data), "--out", str(out), "--date", "2025-02-03"]
    )

    printed = capsys.readouterr().out
    card = json.loads((out / CARD_FILE).read_text())
    assert code == 0
    assert card["version"].startswith("moderation-2025-02-03-")
    assert card["training_data"]["kind"] == "csv" and card["training_data"]["file"] == "ads.csv"
    assert "holdout, ours" in printed and "holdout, seed baseline" in printed
    assert f"roc_auc={card['metrics']['holdout']['roc_auc']}" in printed


def test_evaluate_rebuilds_the_synthetic_holdout_and_matches_the_card(tmp_path, capsys):
    out = tmp_path / "model"
    main(["--no-progress", "train", "--size", "800", "--seed", "3", "--out", str(out)])
    card = json.loads((out / CARD_FILE).read_text())
    capsys.readouterr()

    code = main(["--no-progress", "evaluate", "--model", str(out)])

    printed = capsys.readouterr().out
    assert code == 0
    assert f"roc_auc={card['metrics']['holdout']['roc_auc']}" in printed
    assert "synthetic holdout (seed 3, 200 ads)" in printed


def test_evaluate_of_a_csv_trained_model_asks_for_data(tmp_path, capsys):
    out = tmp_path / "model"
    main(
        ["--no-progress", "train", "--data", str(_write_csv(tmp_path / "a.csv")), "--out", str(out)]
    )

    code = main(["--no-progress", "evaluate", "--model", str(out)])

    assert code == 1
    assert "pass --data FILE.csv" in capsys.readouterr().err


def test_evaluate_scores_a_given_csv(tmp_path, capsys):
    out = tmp_path / "model"
    main(["--no-progress", "train", "--size", "800", "--out", str(out)])
    data = _write_csv(tmp_path / "other.csv", n=300, seed=99)

    code = main(["--no-progress", "evaluate", "--model", str(out), "--data", str(data)])

    assert code == 0
    assert "on other.csv: roc_auc=" in capsys.readouterr().out


def test_evaluate_of_a_missing_model_fails_with_a_message(tmp_path, capsys):
    code = main(["--no-progress", "evaluate", "--model", str(tmp_path / "absent")])

    assert code == 1
    assert "make model" in capsys.readouterr().err


@pytest.mark.parametrize("variable", ["MODEL_URI", "model_uri"])
def test_evaluate_reads_model_uri_in_any_case_as_the_service_does(
    tmp_path, capsys, monkeypatch, variable
):
    monkeypatch.delenv("MODEL_URI", raising=False)
    monkeypatch.setenv(variable, str(tmp_path / "the-served-one"))

    code = main(["--no-progress", "evaluate"])

    assert code == 1
    assert "the-served-one" in capsys.readouterr().err


def test_a_csv_row_becomes_an_ad_with_its_label(tmp_path):
    path = tmp_path / "one.csv"
    path.write_text(
        "item_id,name,description,category,images_qty,is_verified_seller,is_violation\n"
        '7,Sofa,"Grey sofa,\nsecond line",27,3,yes,0\n'
        "8,Call me,+7 912 345 67 89,27,0,no,1\n"
    )

    data = read_labelled_csv(path)

    assert data.labels == [0, 1]
    assert data.ads[0].item_id == 7 and data.ads[0].description == "Grey sofa,\nsecond line"
    assert data.ads[1].is_verified_seller is False and data.ads[1].images_qty == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("name,description\nx,y\n", "expected columns category, images_qty"),
        (
            "name,description,category,images_qty,is_verified_seller,is_violation\n"
            "a,b,three,1,true,1\n",
            "line 2: expected category to be an integer, got 'three'",
        ),
        (
            "name,description,category,images_qty,is_verified_seller,is_violation\n"
            "a,b,3,1,maybe,1\n",
            "line 2: expected is_verified_seller to be true/false",
        ),
        (
            "name,description,category,images_qty,is_verified_seller,is_violation\n"
            "a,b,3,-2,true,1\n",
            "line 2: expected images_qty >= 0, got -2",
        ),
        (
            "name,description,category,images_qty,is_verified_seller,is_violation\n"
            "a,b,9007199254740993,1,true,1\n",
            "line 2: expected category <= 2147483647, got 9007199254740993",
        ),
        (
            "name,description,category,images_qty,is_verified_seller,is_violation\n"
            "a,b,3,1001,true,1\n",
            "line 2: expected images_qty <= 1000, got 1001",
        ),
        (
            "name,description,category,images_qty,is_verified_seller,is_violation\n"
            "a,b,3,1,true,1\n",
            "expected both violations and clean ads",
        ),
    ],
)
def test_a_malformed_csv_is_refused_naming_the_line_and_column(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)

    with pytest.raises(InvalidDataset, match=message):
        read_labelled_csv(path)


@pytest.mark.parametrize(
    ("args", "environ", "said"),
    [
        (["--date", "2024-13-01"], {}, "expected a date as YYYY-MM-DD, got '2024-13-01'"),
        (["--date", "20240101"], {}, "expected a date as YYYY-MM-DD, got '20240101'"),
        (["--date", "2024-W01-1"], {}, "expected a date as YYYY-MM-DD, got '2024-W01-1'"),
        (["--size", "0"], {}, "expected 200 or more, got 0"),
        (["--size", "many"], {}, "expected a whole number, got 'many'"),
        ([], {"MODEL_SEED": "abc"}, "argument --seed: invalid int value: 'abc'"),
        ([], {"MODEL_TRAIN_SIZE": "-5"}, "expected 200 or more, got -5"),
    ],
)
def test_train_refuses_bad_arguments_with_a_usage_error_before_training(
    tmp_path, capsys, monkeypatch, args, environ, said
):
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "model"

    with pytest.raises(SystemExit) as refused:
        main(["--no-progress", "train", "--out", str(out), *args])

    assert refused.value.code == 2
    assert said in capsys.readouterr().err
    assert not out.exists()


def test_evaluate_of_data_the_model_cannot_score_fails_with_a_message(tmp_path, capsys):
    out = tmp_path / "model"
    main(["--no-progress", "train", "--size", "800", "--out", str(out)])
    data = _write_csv(tmp_path / "eval.csv", n=50)
    rows = data.read_text().splitlines()
    header, first = rows[0].split(","), next(csv.reader([rows[1]]))
    first[header.index("images_qty")] = "5000"  # serving takes 0 to 10
    with data.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerow(first)
        file.write("\n".join(rows[2:]) + "\n")
    capsys.readouterr()

    code = main(["--no-progress", "evaluate", "--model", str(out), "--data", str(data)])

    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "images_qty" in err


def _write_rows(path: Path, rows: list[tuple[str, str, int]]) -> Path:
    """(name, description, is_violation) rows, the other columns fixed."""
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(REQUIRED_COLUMNS)
        for name, description, label in rows:
            writer.writerow([name, description, 3, 2, "true", label])
    return path


def test_train_on_too_few_ads_of_a_label_fails_with_a_message_and_writes_nothing(tmp_path, capsys):
    # Three rows were scikit-learn's traceback about its stratified split.
    data = _write_rows(tmp_path / "tiny.csv", [("a", "b", 0), ("c", "d", 1), ("e", "f", 0)])
    out = tmp_path / "model"

    code = main(["--no-progress", "train", "--data", str(data), "--out", str(out)])

    assert code == 1
    err = capsys.readouterr().err
    assert (
        err.startswith("error: tiny.csv: expected at least 20 violations") and "got 1 and 2" in err
    )
    assert not out.exists()


def test_train_on_ads_that_share_no_words_fails_with_a_message(tmp_path, capsys):
    # Every word in one ad alone: no term is left at the vectorizer's minimum frequency.
    rows = [(f"w{i}a w{i}b", f"w{i}c", i % 2) for i in range(300)]
    data = _write_rows(tmp_path / "nowords.csv", rows)

    code = main(["--no-progress", "train", "--data", str(data), "--out", str(tmp_path / "m")])

    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: nowords.csv: cannot train on these ads: ") and "terms" in err


@pytest.mark.parametrize(
    "training_data",
    [
        None,
        {"kind": "synthetic", "size": 800, "seed": 0, "holdout_fraction": 0.25},
        {"kind": "synthetic", "size": "20k", "seed": 0, "holdout_fraction": 0.25, "split_seed": 1},
        {"kind": "synthetic", "size": 800, "seed": 0, "holdout_fraction": 1.5, "split_seed": 1},
        {"kind": "synthetic", "size": float("inf"), "seed": 0, "holdout_fraction": 0.25},
    ],
    ids=["null", "no-split-seed", "size-not-a-number", "fraction-past-one", "size-infinite"],
)
def test_evaluate_of_a_card_whose_training_data_cannot_rebuild_its_holdout_asks_for_data(
    tmp_path, capsys, training_data
):
    out = tmp_path / "model"
    main(["--no-progress", "train", "--size", "800", "--out", str(out)])
    card = json.loads((out / CARD_FILE).read_text())
    card["training_data"] = training_data  # not in the version, so the model still loads
    (out / CARD_FILE).write_text(json.dumps(card))
    capsys.readouterr()

    code = main(["--no-progress", "evaluate", "--model", str(out)])

    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: model ") and err.rstrip().endswith("pass --data FILE.csv")


def test_train_on_a_csv_leaves_our_own_bug_its_traceback(tmp_path, monkeypatch):
    # The fast scorer disagreeing with the pipeline is no fault of the user's ads.
    monkeypatch.setattr(compiler, "AGREEMENT_TOLERANCE", -1.0)
    data = _write_csv(tmp_path / "ads.csv", n=600)

    with pytest.raises(IncompatiblePipeline, match="disagrees"):
        main(["--no-progress", "train", "--data", str(data), "--out", str(tmp_path / "m")])


def test_a_quote_left_open_is_refused_naming_its_line_not_a_traceback(tmp_path):
    rows = ["name,description,category,images_qty,is_verified_seller,is_violation"]
    rows += [f"item {i},plain words of ad {i} and no commas,3,2,true,{i % 2}" for i in range(4000)]
    rows[5] = 'item 4,"a quote left open,3,2,true,0'
    path = tmp_path / "open_quote.csv"
    path.write_text("\n".join(rows) + "\n")

    with pytest.raises(InvalidDataset, match=r"open_quote\.csv: line 6: field larger than"):
        read_labelled_csv(path)


def test_a_csv_that_is_not_utf8_is_refused_naming_the_line(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes(
        b"name,description,category,images_qty,is_verified_seller,is_violation\n"
        b"a,b,3,1,true,1\ncaf\xe9,b,3,1,true,0\n"
    )

    with pytest.raises(InvalidDataset, match=r"latin1\.csv: line 3: expected UTF-8"):
        read_labelled_csv(path)


@pytest.mark.parametrize("variable", ["MODEL_OUT", "MODEL_TRAIN_DATA", "MODEL_DATE"])
def test_an_empty_variable_is_an_unset_one(tmp_path, monkeypatch, variable):
    # MODEL_OUT= trained into the working directory, MODEL_TRAIN_DATA= failed on reading
    # "." and MODEL_DATE= was a usage error, where the service takes MODEL_URI= as unset.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("shared.model.__main__.DEFAULT_OUT", str(tmp_path / "default"))
    monkeypatch.setenv(variable, "")

    assert main(["--no-progress", "train", "--size", "200"]) == 0

    assert (tmp_path / "default" / CARD_FILE).exists()
    assert not (tmp_path / CARD_FILE).exists()
