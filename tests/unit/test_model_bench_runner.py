"""The bench runner: merging results into latest.json and printing them."""

from __future__ import annotations

import importlib
import json

from bench.__main__ import discover, format_table, merge_results


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


def test_a_failed_benchs_earlier_figures_are_dropped_not_left_to_pass_for_this_run(tmp_path):
    path = tmp_path / "latest.json"
    merge_results(path, {"a.first": _result(1.0), "b.other": _result(5.0)})

    merged = merge_results(path, {}, failed_groups=["a"])

    assert merged == {"b.other": _result(5.0)}


def test_every_bench_names_the_groups_of_its_results():
    for name in discover([]):
        groups = importlib.import_module(f"bench.{name}").RESULT_GROUPS

        assert groups and all(isinstance(group, str) and "." not in group for group in groups)
