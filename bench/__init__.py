"""Benchmarks, run by `python -m bench` (`make bench`).

Each `bench/bench_<topic>.py` module has `run() -> dict[str, dict]`, mapping a result
name to `{"value", "unit", "baseline", "ratio", "target"}`: `baseline` is the figure
compared against (or None), `ratio` how many times better than it the value is (> 1 is
better, whichever way the unit runs), and `target` the goal in words. The runner
merges every module's results into `bench/results/latest.json` and prints a table.
"""
