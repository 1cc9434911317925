"""What the operator's one-shot commands on the database share: the settings from the
environment, one autocommit connection, and one line saying how it went."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import psycopg

from shared.command_line import sigterm_as_ctrl_c, stopped_status
from shared.db.pool import one_shot_connection
from shared.settings import InvalidSettings, get_settings


def operator_parser(module: str, doc: str) -> argparse.ArgumentParser:
    """The command's parser: `python -m module`, described by its docstring's first part."""
    return argparse.ArgumentParser(prog=f"python -m {module}", description=doc.split("\n\n")[0])


def run_on_database(name: str, work: Callable[[psycopg.Connection], str]) -> int:
    """Run `work` on a connection to DATABASE_URL and print what it returns; the exit
    status: 0, or 1 with `<name> failed: <why>` on stderr, or 130 / 143 once stopped by
    Ctrl-C / SIGTERM."""
    try:
        with sigterm_as_ctrl_c():
            settings = get_settings()
            with one_shot_connection(settings.database_url, settings.db_connect_timeout_s) as conn:
                outcome = work(conn)
    except (InvalidSettings, psycopg.Error) as error:
        print(f"{name} failed: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as stop:
        # psycopg cancels the statement running when it is interrupted: that chunk is
        # rolled back in the server too, and the ones before it stay done.
        print(f"{name} stopped; run it again to go on", file=sys.stderr)
        return stopped_status(stop)
    print(outcome)
    return 0
