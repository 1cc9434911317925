"""`python -m shared.moderation.prune`: what it deletes from a real PostgreSQL, and what it
keeps because something still needs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import psycopg

from shared.db.chunks import Chunk, IdSpan, every_chunk, id_span
from shared.db.retention import delete_finished_tasks
from tests.python_snippets import REPO_ROOT, run_module
from tests.waiting import wait_until


def _task(conn: psycopg.Connection, status: str, days_ago: float) -> int:
    """A task finished (or, pending, created) `days_ago`."""
    finished = status != "pending"
    row = conn.execute(
        """
        INSERT INTO moderation_results
            (item_id, status, is_violation, probability, error_message, attempts,
             created_at, published_at, processed_at)
        VALUES (1, %(status)s,
                CASE WHEN %(status)s = 'completed' THEN false END,
                CASE WHEN %(status)s = 'completed' THEN 0.1 END,
                CASE WHEN %(status)s = 'failed' THEN 'Ad not found' END,
                1, now() - %(days)s * interval '1 day', now() - %(days)s * interval '1 day',
                CASE WHEN %(finished)s THEN now() - %(days)s * interval '1 day' END)
        RETURNING id
        """,
        {"status": status, "days": days_ago, "finished": finished},
    ).fetchone()
    return row[0]


def _letter(
    conn: psycopg.Connection, task_id: int | None, *, published_days_ago: float | None
) -> int:
    row = conn.execute(
        """
        INSERT INTO dead_letters
            (task_id, source_topic, source_partition, source_offset, headers, published_at)
        VALUES (%s, 'moderation', 0, nextval('dead_letters_id_seq'), '{}',
                now() - %s * interval '1 day')
        RETURNING id
        """,
        (task_id, published_days_ago),
    ).fetchone()
    return row[0]


def _key(conn: psycopg.Connection, task_id: int, *, expires_in_days: float) -> None:
    conn.execute(
        "INSERT INTO idempotency_keys (key, task_id, item_id, expires_at)"
        " VALUES (%s, %s, 1, now() + %s * interval '1 day')",
        (f"key-{task_id}", task_id, expires_in_days),
    )


def _ids(conn: psycopg.Connection, table: str) -> set[int]:
    return {row[0] for row in conn.execute(f"SELECT id FROM {table}")}


def test_prune_deletes_old_finished_tasks_and_keeps_what_is_still_needed(conn, database_url):
    old_completed = _task(conn, "completed", 30)
    old_failed_letter_sent = _task(conn, "failed", 30)
    letter_sent = _letter(conn, old_failed_letter_sent, published_days_ago=29)
    old_failed_letter_unsent = _task(conn, "failed", 30)
    letter_unsent = _letter(conn, old_failed_letter_unsent, published_days_ago=None)
    old_with_live_key = _task(conn, "completed", 30)
    _key(conn, old_with_live_key, expires_in_days=1)
    old_with_expired_key = _task(conn, "completed", 30)
    _key(conn, old_with_expired_key, expires_in_days=-1)
    # Expired by prune's clock, not by that of a retry whose transaction began before it.
    old_with_key_just_expired = _task(conn, "completed", 30)
    _key(conn, old_with_key_just_expired, expires_in_days=-10 / 86_400)
    recent = _task(conn, "completed", 1)
    old_pending = _task(conn, "pending", 30)
    old_letter_of_no_task = _letter(conn, None, published_days_ago=30)
    unsent_letter_of_no_task = _letter(conn, None, published_days_ago=None)
    recent_letter_of_no_task = _letter(conn, None, published_days_ago=1)

    result = run_module(
        "shared.moderation.prune", "--older-than-days", "10", env={"DATABASE_URL": database_url}
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "3 finished task(s) and 1 dead letter(s) of no task deleted"
    assert _ids(conn, "moderation_results") == {
        old_failed_letter_unsent,
        old_with_live_key,
        old_with_key_just_expired,
        recent,
        old_pending,
    }
    assert letter_sent not in _ids(conn, "dead_letters")
    assert _ids(conn, "dead_letters") == {
        letter_unsent,
        unsent_letter_of_no_task,
        recent_letter_of_no_task,
    }
    assert old_letter_of_no_task not in _ids(conn, "dead_letters")
    keys = conn.execute("SELECT task_id FROM idempotency_keys ORDER BY task_id").fetchall()
    assert keys == [(old_with_live_key,), (old_with_key_just_expired,)]
    assert old_completed not in _ids(conn, "moderation_results")


def test_prune_takes_its_bounds_themselves_a_week_and_a_century(conn, database_url):
    _task(conn, "completed", 36_501)  # older than a century
    eight_days_old = _task(conn, "completed", 8)
    env = {"DATABASE_URL": database_url}

    century = run_module("shared.moderation.prune", "--older-than-days", "36500", env=env)
    left_by_the_century = _ids(conn, "moderation_results")
    week = run_module("shared.moderation.prune", "--older-than-days", "7", env=env)

    assert century.returncode == 0, century.stderr
    assert left_by_the_century == {eight_days_old}
    assert week.returncode == 0, week.stderr
    assert _ids(conn, "moderation_results") == set()


def test_prune_keeps_the_published_letter_of_a_failed_task_a_live_key_keeps(conn, database_url):
    # A redelivered record of that task is recognised by its letter: only letters of no
    # task go by their age alone, a task's go with the task.
    failed_with_live_key = _task(conn, "failed", 30)
    _key(conn, failed_with_live_key, expires_in_days=1)
    letter_of_kept_task = _letter(conn, failed_with_live_key, published_days_ago=29)

    result = run_module(
        "shared.moderation.prune", "--older-than-days", "7", env={"DATABASE_URL": database_url}
    )

    assert result.returncode == 0, result.stderr
    assert _ids(conn, "moderation_results") == {failed_with_live_key}
    assert _ids(conn, "dead_letters") == {letter_of_kept_task}


def test_prune_deletes_old_letters_of_no_task_with_ids_past_every_tasks(conn, database_url):
    # The letters' chunks walk the ids of dead_letters, not those of moderation_results:
    # letters of malformed records can outnumber the tasks, and those past the last task's
    # id were never read.
    only_task = _task(conn, "completed", 1)
    for _ in range(3):
        _letter(conn, None, published_days_ago=30)
    assert conn.execute("SELECT max(id) FROM dead_letters").fetchone()[0] > only_task

    result = run_module(
        "shared.moderation.prune", "--older-than-days", "10", env={"DATABASE_URL": database_url}
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0 finished task(s) and 3 dead letter(s) of no task deleted"
    assert _ids(conn, "dead_letters") == set()


def test_prune_goes_on_chunk_after_chunk_until_nothing_old_is_left(conn):
    old = [_task(conn, "completed", 30) for _ in range(5)]
    kept = _task(conn, "completed", 1)
    starts: list[int] = []

    def chunk(after: int, up_to: int, rows: int) -> Chunk:
        starts.append(after)
        return delete_finished_tasks(
            conn, older_than_days=10, after_id=after, up_to_id=up_to, limit=rows
        )

    deleted = every_chunk(chunk, ids=IdSpan(old[0] - 1, kept), rows=2, window=100)

    assert deleted == len(old)
    assert _ids(conn, "moderation_results") == {kept}
    # Each chunk starts past the last one's rows, never from the first id again.
    assert starts == [old[0] - 1, old[1], old[3]]


def test_a_chunk_reads_one_window_of_ids_however_few_rows_it_finds_there(conn):
    # Bounded by its rows alone, a chunk that found few read on to the table's end.
    old = _task(conn, "completed", 30)
    recent = [_task(conn, "completed", 1) for _ in range(6)]
    last_old = _task(conn, "completed", 30)
    windows: list[tuple[int, int]] = []

    def chunk(after: int, up_to: int, rows: int) -> Chunk:
        windows.append((after, up_to))
        return delete_finished_tasks(
            conn, older_than_days=10, after_id=after, up_to_id=up_to, limit=rows
        )

    deleted = every_chunk(chunk, ids=id_span(conn, "moderation_results"), rows=2, window=3)

    assert deleted == 2
    assert _ids(conn, "moderation_results") >= set(recent)
    assert old not in _ids(conn, "moderation_results")
    assert last_old not in _ids(conn, "moderation_results")
    assert all(up_to - after <= 3 for after, up_to in windows)
    assert windows[-1][1] == last_old


def test_prune_stopped_by_sigterm_cancels_its_running_statement_in_the_server(conn, database_url):
    # A key row someone holds makes prune's statement wait: the statement a stopped
    # command leaves running would go on waiting, and commit once it got the row.
    task = _task(conn, "completed", 30)
    _key(conn, task, expires_in_days=-1)
    with psycopg.connect(database_url) as holder:
        holder.execute("SELECT 1 FROM idempotency_keys WHERE task_id = %s FOR UPDATE", (task,))
        prune = subprocess.Popen(
            [sys.executable, "-m", "shared.moderation.prune", "--older-than-days", "10"],
            cwd=REPO_ROOT,
            env={**os.environ, "DATABASE_URL": database_url},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_until(lambda: _waiting_on_a_lock(conn), timeout_s=30, what="prune to wait")
            prune.send_signal(signal.SIGTERM)
            _, stderr = prune.communicate(timeout=30)
        finally:
            prune.kill()
            prune.wait()
        assert prune.returncode == 143, stderr
        assert "prune stopped; run it again to go on" in stderr
        assert not _waiting_on_a_lock(conn)
        holder.rollback()
    assert task in _ids(conn, "moderation_results")  # its chunk was rolled back


def _waiting_on_a_lock(conn: psycopg.Connection) -> bool:
    return conn.execute(
        "SELECT count(*) > 0 FROM pg_stat_activity"
        " WHERE wait_event_type = 'Lock' AND query LIKE '%%DELETE FROM idempotency_keys%%'"
    ).fetchone()[0]
