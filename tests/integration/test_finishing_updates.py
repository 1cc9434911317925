"""The UPDATEs that finish a batch's tasks, or count a failed attempt on them, against a
real PostgreSQL: every verdict and failure lands on its own task whatever the order, and
their plans stay linear when the table's statistics predate the batch
(shared/db/tasks.py, `_COMPLETE`)."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import numpy as np
import psycopg
import pytest

from shared.db import tasks
from shared.db.blocking import fetch_all
from shared.db.tasks import TaskFailure, complete_tasks, fail_tasks, record_failed_attempt
from shared.domain import BatchVerdicts

# Finished tasks of history. With the statements' former join, PostgreSQL 15 and 18 both
# rescanned the verdicts once per row from about 150k finished tasks on.
HISTORY = 300_000
BATCH = 500


def add_pending_tasks(conn: psycopg.Connection, count: int) -> list[int]:
    rows = conn.execute(
        "INSERT INTO moderation_results (item_id, published_at)"
        " SELECT 1 + n %% 100, now() FROM generate_series(1, %s) AS n RETURNING id",
        (count,),
    ).fetchall()
    return [row[0] for row in rows]


def test_each_verdict_lands_on_its_own_task_whatever_the_order(conn: psycopg.Connection) -> None:
    ids = add_pending_tasks(conn, 50)
    shuffled = random.Random(7).sample(ids, len(ids))
    probabilities = np.linspace(0.01, 0.99, len(ids))
    verdicts = BatchVerdicts(probabilities >= 0.5, probabilities, "model-1")

    assert complete_tasks(conn, shuffled, verdicts) == set(ids)

    stored = {
        row[0]: row[1:]
        for row in conn.execute(
            "SELECT id, status, is_violation, probability, model_version FROM moderation_results"
        )
    }
    for task_id, flag, probability in zip(
        shuffled, verdicts.is_violation, probabilities, strict=True
    ):
        assert stored[task_id] == ("completed", bool(flag), float(probability), "model-1")


def test_a_task_given_twice_gets_the_verdict_given_last(conn: psycopg.Connection) -> None:
    first, second = add_pending_tasks(conn, 2)
    verdicts = BatchVerdicts(np.array([False, False, True]), np.array([0.1, 0.2, 0.9]), "m")

    assert complete_tasks(conn, [first, second, first], verdicts) == {first, second}

    stored = dict(
        conn.execute("SELECT id, probability FROM moderation_results ORDER BY id").fetchall()
    )
    assert stored == {first: 0.9, second: 0.2}


def test_verdicts_that_do_not_pair_up_with_the_tasks_are_refused(conn: psycopg.Connection) -> None:
    ids = add_pending_tasks(conn, 3)
    short = BatchVerdicts(np.array([True, False]), np.array([0.9, 0.1]), "m")

    with pytest.raises(ValueError, match="3 task ids for verdicts of shapes"):
        complete_tasks(conn, ids, short)

    pending = conn.execute(
        "SELECT count(*) FROM moderation_results WHERE status = 'pending'"
    ).fetchone()
    assert pending == (3,)


def test_each_failure_lands_on_its_own_task_whatever_the_order(conn: psycopg.Connection) -> None:
    ids = add_pending_tasks(conn, 30)
    failures = [TaskFailure(task_id, f"reason of {task_id}", 1 + task_id % 4) for task_id in ids]
    random.Random(11).shuffle(failures)

    assert fail_tasks(conn, failures) == set(ids)

    stored = {
        row[0]: row[1:]
        for row in conn.execute(
            "SELECT id, status, error_message, attempts FROM moderation_results"
        )
    }
    assert stored == {
        task_id: ("failed", f"reason of {task_id}", 1 + task_id % 4) for task_id in ids
    }


def test_a_task_failed_twice_gets_the_failure_given_last(conn: psycopg.Connection) -> None:
    [task_id] = add_pending_tasks(conn, 1)
    failures = [TaskFailure(task_id, "first", 2), TaskFailure(task_id, "last", 3)]

    assert fail_tasks(conn, failures) == {task_id}

    assert conn.execute("SELECT error_message, attempts FROM moderation_results").fetchall() == [
        ("last", 3)
    ]


def test_a_failed_attempt_counts_only_where_the_record_names_the_tasks_own_ad(
    conn: psycopg.Connection,
) -> None:
    first, second = add_pending_tasks(conn, 2)
    items = dict(conn.execute("SELECT id, item_id FROM moderation_results").fetchall())

    # The second as a corrupt copy would name it: the task, but another ad.
    counted = record_failed_attempt(
        conn, [(first, items[first]), (second, items[second] + 1000)], "read timed out"
    )

    assert set(counted) == {first}
    stored = conn.execute(
        "SELECT id, attempts, error_message FROM moderation_results ORDER BY id"
    ).fetchall()
    assert stored == [(first, 1, "read timed out"), (second, 0, None)]


def test_a_failed_attempt_reports_how_long_the_task_has_been_failing_on_the_servers_clock(
    conn: psycopg.Connection,
) -> None:
    [task_id] = add_pending_tasks(conn, 1)
    [item_id] = conn.execute("SELECT item_id FROM moderation_results").fetchone()

    first = record_failed_attempt(conn, [(task_id, item_id)], "model unavailable")[task_id]
    # As if the first failure had been 40 s ago, an earlier owner's.
    conn.execute(
        "UPDATE moderation_results SET first_failure_at = first_failure_at - interval '40 s'"
    )
    second = record_failed_attempt(conn, [(task_id, item_id)], "model unavailable")[task_id]

    assert first.count == 1 and 0 <= first.failing_for_s < 5
    assert second.count == 2 and 40 <= second.failing_for_s < 45
    assert second.first_failure_at == first.first_failure_at - timedelta(seconds=40)


def test_a_finished_task_is_not_completed_failed_or_counted_a_failure_again(
    conn: psycopg.Connection,
) -> None:
    # Two consumers overlapping in a rebalance: one finished the task after the other
    # read it as pending. The status guard, not the caller, keeps the first outcome.
    completed, failed = add_pending_tasks(conn, 2)
    assert complete_tasks(conn, [completed], BatchVerdicts(np.array([True]), np.array([0.9]), "m"))
    assert fail_tasks(conn, [TaskFailure(failed, "Ad not found", 1)]) == {failed}

    assert fail_tasks(conn, [TaskFailure(completed, "gave up after 4 attempts", 4)]) == set()
    late_verdict = BatchVerdicts(np.array([False]), np.array([0.1]), "m-2")
    assert complete_tasks(conn, [failed], late_verdict) == set()

    def stored() -> list[tuple[Any, ...]]:
        return conn.execute(
            "SELECT id, status, is_violation, probability, model_version, error_message,"
            " attempts, first_failure_at, last_failure_at FROM moderation_results ORDER BY id"
        ).fetchall()

    finished = stored()
    items = dict(conn.execute("SELECT id, item_id FROM moderation_results").fetchall())
    late_failure = [(completed, items[completed]), (failed, items[failed])]
    assert record_failed_attempt(conn, late_failure, "model unavailable") == {}

    assert stored() == finished
    assert [row[:7] for row in finished] == [
        (completed, "completed", True, 0.9, "m", None, 1),
        (failed, "failed", None, None, None, "Ad not found", 1),
    ]


def test_ids_no_task_has_take_nothing_from_the_others(conn: psycopg.Connection) -> None:
    first, second = add_pending_tasks(conn, 2)
    missing = [second + 1, 10**12]
    verdicts = BatchVerdicts(
        np.array([True, False, True, False]), np.array([0.9, 0.1, 0.8, 0.2]), "m"
    )

    assert complete_tasks(conn, [missing[1], first, missing[0], second], verdicts) == {
        first,
        second,
    }

    stored = dict(conn.execute("SELECT id, probability FROM moderation_results").fetchall())
    assert stored == {first: 0.1, second: 0.2}


@pytest.fixture
def tasks_table_of_its_own(conn: psycopg.Connection) -> Iterator[None]:
    """moderation_results in a schema of its own for this connection, dropped afterwards:
    statistics cannot be taken back (an ANALYZE of an emptied table keeps the old ones),
    and those of 300k finished tasks must not steer the plans of later tests."""
    schema = f"finishing_updates_{uuid.uuid4().hex[:8]}"
    conn.execute(f"CREATE SCHEMA {schema}")
    try:
        conn.execute(
            f"CREATE TABLE {schema}.moderation_results"
            " (LIKE public.moderation_results INCLUDING ALL)"
        )
        conn.execute(f"SET search_path = {schema}, public")
        yield
    finally:
        conn.execute("SET search_path = public")
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.mark.usefixtures("tasks_table_of_its_own")
def test_no_step_of_any_plan_runs_once_per_row_when_the_statistics_predate_the_batch(
    conn: psycopg.Connection,
) -> None:
    # What a backlog meets: statistics that saw only finished tasks, then 3 x 500 pending.
    conn.execute(
        "INSERT INTO moderation_results (item_id, status, is_violation, probability,"
        " model_version, attempts, published_at, processed_at)"
        " SELECT 1 + n %% 100, 'completed', false, 0.1, 'old', 1, now(), now()"
        " FROM generate_series(1, %s) AS n",
        (HISTORY,),
    )
    conn.execute("ANALYZE moderation_results")
    to_complete = add_pending_tasks(conn, BATCH)
    to_fail = add_pending_tasks(conn, BATCH)
    to_count = add_pending_tasks(conn, BATCH)
    items = dict(
        conn.execute(
            "SELECT id, item_id FROM moderation_results WHERE id = ANY(%s)", (to_count,)
        ).fetchall()
    )
    probabilities = np.full(BATCH, 0.25)
    verdicts = BatchVerdicts(probabilities > 0.5, probabilities, "model-1")
    completion_plan = fetch_all(
        conn,
        "EXPLAIN (ANALYZE, FORMAT JSON) " + tasks._COMPLETE,
        tasks.completion_parameters(to_complete[::-1], verdicts),
    )[0][0]
    failures = [TaskFailure(task_id, "Ad not found", 1) for task_id in to_fail]
    failure_plan = conn.execute(
        "EXPLAIN (ANALYZE, FORMAT JSON) " + tasks._FAIL, tasks.failure_parameters(failures)
    ).fetchone()[0]

    counted = [(task_id, items[task_id]) for task_id in to_count]
    count_plan = conn.execute(
        "EXPLAIN (ANALYZE, FORMAT JSON) " + tasks._COUNT_FAILED_ATTEMPT,
        tasks.failed_attempt_parameters(counted, "read timed out"),
    ).fetchone()[0]

    assert steps_run_more_than_once(completion_plan[0]["Plan"]) == []
    assert steps_run_more_than_once(failure_plan[0]["Plan"]) == []
    assert steps_run_more_than_once(count_plan[0]["Plan"]) == []
    # EXPLAIN ANALYZE ran them: each did its whole work.
    assert completion_plan[0]["Plan"]["Actual Rows"] == BATCH
    assert failure_plan[0]["Plan"]["Actual Rows"] == BATCH
    assert count_plan[0]["Plan"]["Actual Rows"] == BATCH


def steps_run_more_than_once(node: dict[str, Any]) -> list[str]:
    """Each plan node that ran more than once, as 'type x loops'."""
    found = [f"{node['Node Type']} x{node['Actual Loops']}"] if node["Actual Loops"] > 1 else []
    for child in node.get("Plans", []):
        found += steps_run_more_than_once(child)
    return found
