"""The README's settings table names every setting, and only those, with its real default.

The table is where a user looks a setting up; a field added, renamed or given another
default without it would leave the README wrong without anyone noticing.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shared.settings import DEFAULT_MODEL_URI, Settings

README = Path(__file__).resolve().parents[2] / "README.md"
# An empty default, written "empty" in the table.
EMPTY_BY_DEFAULT = [name for name, field in Settings.model_fields.items() if field.default == ""]
# A default the table describes rather than spells out, with the words that must say it.
DESCRIBED_DEFAULTS = {
    **dict.fromkeys(EMPTY_BY_DEFAULT, "empty"),
    "model_uri": "`var/models/default`",
}


def settings_table() -> dict[str, str]:
    """Env var -> its Default cell, from the README's "Settings" section; a row naming two
    settings (`A` / `B`, defaults `1 / 10`) gives each its own part of the cell."""
    section = README.read_text().split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    table: dict[str, str] = {}
    for row in rows:
        names_cell, default_cell = (cell.strip() for cell in row.strip("|").split("|")[:2])
        names = re.findall(r"`([A-Z_]+)`", names_cell)
        defaults = default_cell.split(" / ") if len(names) > 1 else [default_cell]
        assert len(defaults) == len(names), f"one default per setting in: {row}"
        table.update(zip(names, defaults, strict=True))
    return table


def test_the_table_lists_every_setting_and_no_other():
    assert set(settings_table()) == {name.upper() for name in Settings.model_fields}


@pytest.mark.parametrize("field", sorted(Settings.model_fields))
def test_the_table_gives_each_settings_default(field):
    cell = settings_table()[field.upper()]
    default = Settings.model_fields[field].default

    if field in DESCRIBED_DEFAULTS:
        assert DESCRIBED_DEFAULTS[field] in cell
    elif isinstance(default, bool):
        assert cell.split(" ", 1)[0] == str(default).lower()
    elif isinstance(default, str):
        assert cell.startswith(f"`{default}`") or cell.split(" ", 1)[0] == default
    else:
        # Numbers as the table writes them: "5" for 5.0, "86400 (a day)" for 86400.
        assert float(cell.split(" ", 1)[0]) == default


def test_the_described_defaults_are_what_the_table_says():
    # The exceptions above hold only while the defaults are what their words say.
    assert Settings.model_fields["model_uri"].default == DEFAULT_MODEL_URI
    assert Path(DEFAULT_MODEL_URI).parts[-3:] == ("var", "models", "default")
