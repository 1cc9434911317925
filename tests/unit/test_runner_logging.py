"""Log format: JSON lines with task_id and item_id off a terminal, readable lines on one."""

from __future__ import annotations

import io
import json
import logging

import pytest

from shared.logging_setup import (
    JsonLinesFormatter,
    ReadableFormatter,
    configure_logging,
    configure_logging_unless_done,
)


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_root_logger():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def _record(**extra: object) -> logging.LogRecord:
    logger = logging.getLogger("shared.moderation.tasks")
    return logger.makeRecord(
        logger.name, logging.WARNING, __file__, 1, "publish deferred", None, None, extra=extra
    )


def test_json_line_carries_task_id_and_item_id_from_extra():
    line = JsonLinesFormatter().format(_record(task_id=7, item_id=1, error="broker down"))

    entry = json.loads(line)
    assert entry["message"] == "publish deferred"
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "shared.moderation.tasks"
    assert (entry["task_id"], entry["item_id"], entry["error"]) == (7, 1, "broker down")
    assert entry["ts"].endswith("+00:00")
    assert list(entry)[4:6] == ["task_id", "item_id"]


def test_json_line_puts_task_id_and_item_id_first_whatever_order_extra_gave():
    # They are what an operator searches by, so they sit right after the message.
    line = JsonLinesFormatter().format(_record(error="broker down", item_id=1, task_id=7))

    assert list(json.loads(line))[4:] == ["task_id", "item_id", "error"]


def test_json_line_keeps_the_traceback_in_one_line():
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.getLogger("x").makeRecord(
            "x", logging.ERROR, __file__, 1, "failed", None, __import__("sys").exc_info()
        )

    line = JsonLinesFormatter().format(record)

    assert "\n" not in line
    assert "ValueError: boom" in json.loads(line)["exception"]


def test_json_line_escapes_the_unicode_line_breaks_json_may_leave_raw():
    # A request path may hold U+0085, U+2028 or U+2029 (percent-decoded); a shipper or
    # splitlines() that ends lines there would cut the entry in two.
    path = "/predict\u0085x\u2028y\u2029z"

    line = JsonLinesFormatter().format(_record(path=path))

    assert line.splitlines() == [line]
    assert json.loads(line)["path"] == path


def test_readable_line_puts_the_extras_after_the_message():
    line = ReadableFormatter().format(_record(task_id=7, item_id=1))

    assert line.endswith("WARNING shared.moderation.tasks: publish deferred task_id=7 item_id=1")


def test_a_readable_line_shows_control_characters_in_a_value_escaped():
    forged = "/x\n12:00:00 ERROR shared.db: dropped every table\x1b[2J"

    line = ReadableFormatter().format(_record(path=forged, task_id=7))

    assert "\n" not in line and "\x1b" not in line
    assert line.endswith(f"publish deferred task_id=7 path={forged!r}")


def test_a_readable_line_escapes_a_terminal_escape_without_any_newline():
    # An escape sequence alone can rewrite what the terminal shows.
    forged = "/x\x1b[2J\r12:00:00 ERROR shared.db: dropped every table"

    line = ReadableFormatter().format(_record(path=forged))

    assert "\x1b" not in line and "\r" not in line
    assert line.endswith(f"path={forged!r}")


def test_configure_logging_writes_json_when_the_stream_is_not_a_terminal(restore_root_logger):
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)

    logging.getLogger("t").info("accepted", extra={"task_id": 3, "item_id": 9})

    assert json.loads(stream.getvalue())["task_id"] == 3


def test_configure_logging_writes_readable_lines_on_a_terminal(restore_root_logger):
    stream = FakeTerminal()
    configure_logging("DEBUG", stream=stream)

    logging.getLogger("t").debug("accepted", extra={"task_id": 3, "item_id": 9})

    assert stream.getvalue().rstrip().endswith("DEBUG t: accepted task_id=3 item_id=9")


def test_logging_is_set_up_once_for_a_process_nobody_set_it_up_for(restore_root_logger):
    root = logging.getLogger()
    root.handlers[:] = []

    configure_logging_unless_done("WARNING")
    (handler,) = root.handlers
    configure_logging_unless_done("DEBUG")

    assert root.handlers == [handler]
    assert root.level == logging.WARNING


def test_logging_someone_set_up_is_left_as_it_is(restore_root_logger):
    root = logging.getLogger()
    theirs = logging.StreamHandler(io.StringIO())
    root.handlers[:] = [theirs]
    root.setLevel(logging.ERROR)

    configure_logging_unless_done("DEBUG")

    assert root.handlers == [theirs]
    assert root.level == logging.ERROR


def test_functions_frameworks_execution_id_logging_gets_our_json_lines_and_level(
    restore_root_logger, capfd
):
    # LOG_EXECUTION_ID makes functions-framework put its own root handler in, at WARNING
    # and with no formatter: an INFO line, and every line's task_id, would be lost.
    # It also disables every logger made before it, as our modules' are (the function's
    # source is imported first).
    from functions_framework import _configure_app_execution_id_logging

    made_at_import = logging.getLogger("shared.made_at_import")
    _configure_app_execution_id_logging()
    configure_logging_unless_done("INFO")

    made_at_import.info("accepted", extra={"task_id": 3, "item_id": 9})

    # Its stream wraps the process's stderr as it was at import: captured at the fd.
    captured = capfd.readouterr()
    line = json.loads((captured.err or captured.out).strip().splitlines()[-1])
    assert (line["message"], line["task_id"], line["item_id"]) == ("accepted", 3, 9)
