"""`python -m shared.moderation.republish --published-before-s N`: after Kafka lost
records it had acknowledged (a topic's retention ran out before a consumer read it, a
broker's disk lost), hand the tasks still pending and published at least N seconds ago
back to the outbox relay, which publishes them again. A task whose record is still on
the topic is at worst handled twice, which the consumer recognises as a duplicate."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import psycopg

from shared.db.tasks import republish_pending_tasks
from shared.moderation.operator_command import operator_parser, run_on_database

MAX_PUBLISHED_BEFORE_S = 36_500 * 86_400  # a century


def main(argv: Sequence[str] | None = None) -> int:
    parser = operator_parser("shared.moderation.republish", __doc__)
    parser.add_argument(
        "--published-before-s",
        type=float,
        required=True,
        help="only tasks published at least this many seconds ago (a consumer lagging "
        "that long would still read the others)",
    )
    args = parser.parse_args(argv)
    # Bounded above too: PostgreSQL refuses an interval of `inf` or 1e300 seconds, and its
    # error (exit 1) would read, to a Job that retries failures, as a passing outage.
    if not 0 <= args.published_before_s <= MAX_PUBLISHED_BEFORE_S:
        parser.error(f"--published-before-s must be from 0 to {MAX_PUBLISHED_BEFORE_S}")

    def republish(conn: psycopg.Connection) -> str:
        count = republish_pending_tasks(conn, published_before_s=args.published_before_s)
        return f"{count} pending task(s) handed to the outbox relay"

    return run_on_database("republish", republish)


if __name__ == "__main__":
    sys.exit(main())
