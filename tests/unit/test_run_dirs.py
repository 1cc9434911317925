"""The clean-up of test sessions that died: one at a time."""

from __future__ import annotations

import os
import subprocess
import threading

from infra import _process, run_dirs


def _abandoned_run_dir(root, name="abandoned"):
    gone = subprocess.Popen(["true"])
    gone.wait()
    run_dir = root / name
    run_dir.mkdir(parents=True)
    (run_dir / run_dirs.OWNER_FILE).write_text(f"{gone.pid}\n")
    return run_dir


def test_a_clean_up_waits_while_another_one_runs_then_finds_what_is_left(tmp_path):
    run_dir = _abandoned_run_dir(tmp_path)
    cleaned: list = []
    finished = threading.Event()

    def clean() -> None:
        cleaned.extend(run_dirs.clean_abandoned_run_dirs(tmp_path))
        finished.set()

    clean_up = threading.Thread(target=clean, daemon=True)

    with _process.exclusive_lock(tmp_path / run_dirs.CLEAN_UP_LOCK, timeout_s=5):
        clean_up.start()
        # Unhindered, a clean-up of a folder with no servers takes milliseconds.
        waited = not finished.wait(timeout=1.0)
        still_there = run_dir.exists()
    clean_up.join(timeout=30)

    assert waited and still_there, "the clean-up went ahead while another one held the lock"
    assert cleaned == [run_dir] and not run_dir.exists()


def test_a_failed_sessions_logs_outlive_later_clean_ups_the_newest_few_of_them(tmp_path):
    failed = []
    for n in range(run_dirs.KEPT_FAILED_SESSIONS + 2):
        run_dir = _abandoned_run_dir(tmp_path, f"failed-{n}")
        (run_dir / "kafka" / "logs").mkdir(parents=True)
        (run_dir / "kafka" / "logs" / "server.log").write_text("what went wrong\n")
        run_dirs.remove_data_keep_logs(run_dir)
        # Marked one after the other, as sessions fail: the oldest go first.
        os.utime(run_dir / run_dirs.KEPT_LOGS_FILE, (1_000 + n, 1_000 + n))
        failed.append(run_dir)
    abandoned = _abandoned_run_dir(tmp_path, "abandoned")

    cleaned = run_dirs.clean_abandoned_run_dirs(tmp_path)

    assert sorted(cleaned) == sorted([abandoned, *failed[:2]])
    for run_dir in failed[2:]:
        assert (run_dir / "kafka" / "logs" / "server.log").read_text() == "what went wrong\n"
