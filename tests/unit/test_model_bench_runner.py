"""The bench runner: merging results into latest.json and printing them."""

from __future__ import annotations

import http.server
import importlib
import json
import math
import os
import signal
import sys
import threading
import urllib.request

import pytest

import bench.__main__ as runner
from bench.__main__ import discover, format_table, merge_results, result_groups
from bench.bench_http import HELLO_SOURCE
from bench.figures import ratio, rounded_down, rounded_up
from bench.loadgen import RequestMix, fixed_rate, percentile
from bench.processes import function_server


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


def test_a_figure_held_to_a_bound_is_rounded_towards_missing_it():
    assert rounded_up(10.004, 2) == 10.01  # of a < 10 ms target: never 10.0
    assert rounded_up(0.30001, 4) == 0.3001
    assert rounded_up(2.5, 1) == 2.5  # an exact value stays
    assert rounded_down(99_999.6) == 99_999  # of a >= 100k rows/s target: never 100,000
    assert isinstance(rounded_down(99_999.6), int)  # printed as a count, not 9.999e+04
    # No samples: left for the runner to refuse, not a crash in the rounding.
    assert math.isnan(rounded_up(float("nan"), 2)) and math.isnan(rounded_down(float("nan")))


def test_a_percentile_is_the_nearest_rank():
    values = list(range(1, 101))

    assert [percentile(values, q) for q in (50, 99, 100)] == [50, 99, 100]
    assert percentile(list(range(1, 1001)), 99.9) == 999  # not the maximum, by a float
    assert percentile([7.0], 99) == 7.0


@pytest.fixture
def default_sigterm():
    """SIGTERM as a new process has it, and pytest's own handling back afterwards: the
    runner installs its handler for the rest of the process."""
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_bench_that_exits_does_not_stop_the_others_nor_keep_its_old_figures(
    tmp_path, monkeypatch, default_sigterm
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


def test_sigterm_stops_the_run_and_what_finished_before_it_is_kept(
    tmp_path, monkeypatch, default_sigterm
):
    monkeypatch.setattr(runner, "RESULTS_FILE", tmp_path / "latest.json")
    monkeypatch.setattr(runner, "RUNS_FILE", tmp_path / "latest_runs.json")
    merge_results(runner.RESULTS_FILE, {"consumer_throughput.old": _result(1.0)})
    ran = []

    def run_module(name: str) -> dict:
        ran.append(name)
        if name == "bench_consumer_throughput":
            os.kill(os.getpid(), signal.SIGTERM)  # as a CI timeout sends it, mid-bench
        return {"async_e2e.p99": _result(80.0)}

    monkeypatch.setattr(runner, "run_module", run_module)

    code = runner.main(["async_e2e", "consumer_throughput", "http"])

    assert code == 128 + signal.SIGTERM
    assert ran == ["bench_async_e2e", "bench_consumer_throughput"]  # http never started
    assert json.loads(runner.RESULTS_FILE.read_text()) == {"async_e2e.p99": _result(80.0)}


def test_a_bench_whose_figure_is_not_a_number_fails_rather_than_record_it(monkeypatch):
    class NoSamples:
        RESULT_GROUPS = ("async_e2e",)

        @staticmethod
        def run() -> dict:
            return {"async_e2e.p99": _result(float("nan"))}

    monkeypatch.setitem(sys.modules, "bench.bench_no_samples", NoSamples)

    with pytest.raises(ValueError, match=r"async_e2e\.p99 has value nan"):
        runner.run_module("bench_no_samples")


def test_a_fixed_rate_run_counts_failed_requests_in_its_latencies_too():
    class Unavailable(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Unavailable)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        run = fixed_rate(
            f"http://127.0.0.1:{server.server_port}",
            RequestMix("POST"),
            rate=50,
            duration_s=0.2,
        )
    finally:
        server.shutdown()

    assert (run.sent, run.errors) == (10, 10)
    # Left out, the failures would leave the percentiles nothing (or only the fast) to show.
    assert len(run.latencies_ms) == 10 and all(ms >= 0 for ms in run.latencies_ms)


def test_a_benchs_function_server_is_gunicorn_even_with_debug_in_the_environment(
    tmp_path, monkeypatch
):
    # functions-framework takes DEBUG for --debug, which would serve with werkzeug.
    monkeypatch.setenv("DEBUG", "1")
    with (
        function_server(HELLO_SOURCE, "hello", {}, log_dir=tmp_path, server_as="predict") as server,
        urllib.request.urlopen(server.url, timeout=10) as response,
    ):
        assert response.headers["Server"].startswith("gunicorn")


def test_a_benchs_groups_are_read_from_its_source_even_if_it_cannot_be_imported():
    assert result_groups("bench_http") == ("predict_http", "simple_predict_http")
