"""`python -m shared.moderation.prune --older-than-days N`: delete tasks finished over N
days ago (with their expired idempotency keys and published dead letters) and published
dead letters of malformed records over N days old. No task or dead letter is ever
deleted otherwise: the tables keep every verdict until this is run, by hand or on a
schedule.

Pick N longer than the `moderation` topic's retention (7 days by default): a dead letter's
row is what recognises its record when Kafka delivers it again."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import psycopg

from shared.db.chunks import every_chunk, id_span
from shared.db.retention import delete_finished_tasks, delete_published_letters_of_no_task
from shared.moderation.operator_command import operator_parser, run_on_database

# Below the default retention of a Kafka topic, a pruned dead letter's record could come
# back and be taken for a new one.
MIN_DAYS = 7
MAX_DAYS = 36_500  # a century


def main(argv: Sequence[str] | None = None) -> int:
    parser = operator_parser("shared.moderation.prune", __doc__)
    parser.add_argument(
        "--older-than-days",
        type=float,
        required=True,
        help=f"finished (or published) at least this many days ago; {MIN_DAYS} or more",
    )
    args = parser.parse_args(argv)
    # Bounded above too: PostgreSQL refuses an interval of `inf` or 1e12 days, and its
    # error (exit 1) would read, to a Job that retries failures, as a passing outage.
    if not MIN_DAYS <= args.older_than_days <= MAX_DAYS:
        parser.error(f"--older-than-days must be from {MIN_DAYS} to {MAX_DAYS}")
    days = args.older_than_days

    def prune(conn: psycopg.Connection) -> str:
        tasks = every_chunk(
            lambda after, up_to, rows: delete_finished_tasks(
                conn, older_than_days=days, after_id=after, up_to_id=up_to, limit=rows
            ),
            ids=id_span(conn, "moderation_results"),
        )
        letters = every_chunk(
            lambda after, up_to, rows: delete_published_letters_of_no_task(
                conn, older_than_days=days, after_id=after, up_to_id=up_to, limit=rows
            ),
            ids=id_span(conn, "dead_letters"),
        )
        return f"{tasks} finished task(s) and {letters} dead letter(s) of no task deleted"

    return run_on_database("prune", prune)


if __name__ == "__main__":
    sys.exit(main())
