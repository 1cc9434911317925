"""`python -m shared.moderation.republish --published-before-s N`: after Kafka lost
records it had acknowledged (a topic's retention ran out before a consumer read it, a
broker's disk lost), hand the tasks still pending and published at least N seconds ago
back to the outbox relay, which publishes them again. A task whose record is still on
the topic is at worst handled twice, which the consumer recognises as a duplicate."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence

import psycopg

from shared.db.tasks import republish_pending_tasks
from shared.settings import InvalidSettings, get_settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m shared.moderation.republish", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--published-before-s",
        type=float,
        required=True,
        help="only tasks published at least this many seconds ago (a consumer lagging "
        "that long would still read the others)",
    )
    args = parser.parse_args(argv)
    if not args.published_before_s >= 0:
        parser.error("--published-before-s must be 0 or more")
    try:
        settings = get_settings()
        with psycopg.connect(
            settings.database_url,
            autocommit=True,
            connect_timeout=math.ceil(settings.db_connect_timeout_s),
        ) as conn:
            count = republish_pending_tasks(conn, published_before_s=args.published_before_s)
    except (InvalidSettings, psycopg.Error) as error:
        print(f"republish failed: {error}", file=sys.stderr)
        return 1
    print(f"{count} pending task(s) handed to the outbox relay")
    return 0


if __name__ == "__main__":
    sys.exit(main())
