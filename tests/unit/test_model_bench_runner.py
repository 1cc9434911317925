"""The bench runner: merging results into latest.json and printing them."""

from __future__ import annotations

import importlib
import json
import math

import pytest

import bench.__main__ as runner
from bench.__main__ import discover, format_table, merge_results, result_groups
from bench.figures import ratio
from bench.loadgen import percentile


def _result(value: float, baseline: float | None = None) -> dict:
    return {"value": value, "unit": "ms", "baseline": baseline, "ratio": None, "target": "fast"}


def test_new_results_replace_old_ones_and_others_are_kept(tmp_path):
    path = tmp_path / "results" / "latest.json"
    merge_results(path, {"a.first": _result(1.0), "b.other": _result(5.0)})

    merged = merge_results(path, {"a.first": _result(0.5)})

    assert merged == {"a.first": _result(0.5), "b.other": _result(5.0)}
    assert json.loads(path.read_text()) == merged


def test_a_figure_its_bench_no_longer_reports_is_dropped_when_that_bench_runs_again(tmp_path):
    path = tmp_path / "latest.json"
    merge_results(path, {"a.first": _result(1.0), "a.gone": _result(2.0), "b.other": _result(5.0)})

    merged = merge_results(path, {"a.first": _result(0.5)})

    assert merged == {"a.first": _result(0.5), "b.other": _result(5.0)}


def test_the_table_shows_every_result_with_its_unit_baseline_and_target():
    results = {"model.single": {**_result(0.1234, 4.2), "ratio": 34.0}}

    table = format_table(results)

    assert "model.single" in table and "0.1234 ms" in table and "4.2 ms" in table
    assert "34x" in table and "fast" in table


def test_the_table_shows_a_ratio_as_its_bench_rounded_it_so_a_miss_never_reads_as_a_hit():
    results = {"consumer.vs_floor": {**_result(29_400, 63_400), "unit": "rows/s", "ratio": 0.46}}

    table = format_table(results)

    assert "0.46x" in table and "0.5x" not in table


def test_every_bench_module_is_discovered_and_topics_can_be_named():
    names = discover([])

    assert "bench_model_inference" in names
    assert discover(["model_inference"]) == ["bench_model_inference"]


def test_an_unknown_bench_is_refused_by_the_name_a_user_types():
    with pytest.raises(SystemExit, match=r"unknown bench http_typo; expected one of .*\bhttp\b"):
        discover(["http_typo"])


def test_a_failed_benchs_earlier_figures_are_dropped_not_left_to_pass_for_this_run(tmp_path):
    path = tmp_path / "latest.json"
    merge_results(path, {"a.first": _result(1.0), "b.other": _result(5.0)})

    merged = merge_results(path, {}, failed_groups=["a"])

    assert merged == {"b.other": _result(5.0)}


def test_every_bench_names_the_groups_of_its_results():
    for name in discover([]):
        groups = importlib.import_module(f"bench.{name}").RESULT_GROUPS

        assert groups and all(isinstance(group, str) and "." not in group for group in groups)


def test_a_ratio_is_rounded_down_so_a_miss_never_reads_as_a_hit():
    assert ratio(4951, 10_000) == 0.49  # to the nearest, 0.5: a 0.5 target met
    assert ratio(14_993, 15_000, 3) == 0.999
    assert ratio(57, 100) == 0.57  # 56.99999999999999 in floats, not 0.56
    assert math.isnan(ratio(float("nan"), 3.4))  # a run without samples, not a crash


def test_a_percentile_is_the_nearest_rank():
    values = list(range(1, 101))

    assert [percentile(values, q) for q in (50, 99, 100)] == [50, 99, 100]
    assert percentile(list(range(1, 1001)), 99.9) == 999  # not the maximum, by a float
    assert percentile([7.0], 99) == 7.0


def test_a_bench_that_exits_does_not_stop_the_others_nor_keep_its_old_figures(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(runner, "RESULTS_FILE", tmp_path / "latest.json")
    monkeypatch.setattr(runner, "RUNS_FILE", tmp_path / "latest_runs.json")
    merge_results(runner.RESULTS_FILE, {"model_inference.old": _result(1.0)})

    def run_module(name: str) -> dict:
        if name == "bench_model_inference":
            raise SystemExit("the baseline needs pandas")
        return {"async_e2e.p99": _result(80.0)}

    monkeypatch.setattr(runner, "run_module", run_module)

    code = runner.main(["model_inference", "async_e2e"])

    assert code == 1
    assert json.loads(runner.RESULTS_FILE.read_text()) == {"async_e2e.p99": _result(80.0)}
    runs = json.loads(runner.RUNS_FILE.read_text())
    assert list(runs) == ["async_e2e"] and {"commit", "measured_at"} <= set(runs["async_e2e"])


def test_a_benchs_groups_are_read_from_its_source_even_if_it_cannot_be_imported():
    assert result_groups("bench_http") == ("predict_http", "simple_predict_http")
