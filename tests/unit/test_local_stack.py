"""`python -m infra up|down` on one state folder take turns."""

from __future__ import annotations

import threading

from infra import _process, local_stack


def test_infra_down_waits_while_another_up_or_down_holds_the_state_folder(tmp_path):
    finished = threading.Event()
    down = threading.Thread(
        target=lambda: (local_stack.down(tmp_path), finished.set()), daemon=True
    )

    with _process.exclusive_lock(tmp_path / local_stack.LOCK_FILE, timeout_s=5):
        down.start()
        # With nothing running, an unhindered `down` returns in milliseconds.
        waited = not finished.wait(timeout=1.0)
    down.join(timeout=10)

    assert waited, "down went ahead while the state folder was held"
    assert finished.is_set(), "down did not finish within 10 s of the folder's release"
