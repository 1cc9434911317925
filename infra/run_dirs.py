"""Per-test-session folders under var/test-infra/, and the clean-up of sessions that died.

Each pytest session that starts its own Kafka and PostgreSQL gets a folder of its
own (several sessions may share one checkout), with its pid in `owner.pid`. A
session killed before its teardown leaves its servers running; the next session
finds the folder's owner gone, stops those servers and deletes the folder. A session
that failed keeps its servers' logs in its folder, which the clean-up leaves alone: the
newest KEPT_FAILED_SESSIONS of them stay for someone to read.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from infra import _process
from infra.kafka_broker import KafkaBroker
from infra.postgres_server import PostgresServer

REPO_ROOT = Path(__file__).resolve().parents[1]
TEST_INFRA_ROOT = REPO_ROOT / "var" / "test-infra"
OWNER_FILE = "owner.pid"
# Present in the command line of every pytest process, however it was started.
OWNER_MARKER = "pytest"
CLEAN_UP_LOCK = ".clean-up.lock"  # a file, not a folder: the clean-up passes it by
# A folder's servers take up to about a minute to stop, in the worst case.
CLEAN_UP_LOCK_TIMEOUT_S = 900.0
# In the folder of a failed session, whose logs are kept: written when its servers have
# stopped, so the clean-up has nothing to stop there.
KEPT_LOGS_FILE = "kept-logs"
KEPT_FAILED_SESSIONS = 5


def claim_run_dir(root: Path = TEST_INFRA_ROOT) -> Path:
    """A new folder for this process's servers."""
    run_dir = root / uuid.uuid4().hex[:12]
    run_dir.mkdir(parents=True)
    (run_dir / OWNER_FILE).write_text(f"{os.getpid()}\n")
    return run_dir


def clean_abandoned_run_dirs(
    root: Path = TEST_INFRA_ROOT, owner_marker: str = OWNER_MARKER
) -> list[Path]:
    """Stop the servers of sessions whose process is gone and delete their folders
    (`owner_marker`: a word in the command line of every owner process)."""
    if not root.is_dir():
        return []
    cleaned = []
    # One clean-up at a time: two sessions starting together would both stop the same
    # servers, and one could fail its start on a file the other had just moved.
    with _process.exclusive_lock(root / CLEAN_UP_LOCK, CLEAN_UP_LOCK_TIMEOUT_S):
        for run_dir in sorted(root.iterdir()):
            # The mark is looked for only once the owner is gone: a session marks its
            # folder before it exits, so it is there by then, or never will be.
            if (
                run_dir.is_dir()
                and _is_abandoned(run_dir, owner_marker)
                and not (run_dir / KEPT_LOGS_FILE).exists()
            ):
                KafkaBroker(run_dir / "kafka").stop()
                PostgresServer(run_dir / "postgres").stop()
                shutil.rmtree(run_dir, ignore_errors=True)
                cleaned.append(run_dir)
        kept = sorted(
            (run_dir for run_dir in root.iterdir() if (run_dir / KEPT_LOGS_FILE).exists()),
            key=lambda run_dir: (run_dir / KEPT_LOGS_FILE).stat().st_mtime,
        )
        for run_dir in kept[:-KEPT_FAILED_SESSIONS]:
            shutil.rmtree(run_dir, ignore_errors=True)
            cleaned.append(run_dir)
    return cleaned


def remove_data_keep_logs(run_dir: Path) -> None:
    """After a failed session, its servers stopped: the logs are what someone will read,
    the data is just big. The folder is marked, so that later sessions' clean-ups keep it."""
    for data_dir in (run_dir / "kafka" / "data", run_dir / "postgres" / "data"):
        shutil.rmtree(data_dir, ignore_errors=True)
    (run_dir / KEPT_LOGS_FILE).write_text("the logs of a failed test session\n")


def _is_abandoned(run_dir: Path, owner_marker: str) -> bool:
    try:
        owner = int((run_dir / OWNER_FILE).read_text())
    except (FileNotFoundError, ValueError):
        # A folder being created right now has no owner file for an instant.
        return False
    return not _process.is_alive(owner, owner_marker)
