"""The process environment around the settings: variables that look like misspelt
settings, and the settings' own variables dropped from an environment."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, MutableMapping

# How many edits (a letter added, dropped, changed, or two swapped) a variable's name may
# be from a setting's to be taken for a misspelling of it: DATABSE_URL, LOGLEVEL and
# MODEL_URL are; KAFKA_NUM_PARTITIONS (a Kafka image's own) is not. One edit only for a
# short setting, or libpq's PGPORT would pass for PORT.
MISSPELLING_EDITS = 2
SHORT_SETTING = 8
# Kubernetes gives every pod such variables for each service, `kafka-bootstrap`'s included.
_KUBERNETES_SERVICE_VARIABLE = re.compile(r".*_SERVICE_(HOST|PORT)(_.*)?|.*_PORT(_.*)?")


def setting_variable(name: str, environ: Mapping[str, str]) -> str | None:
    """The value of the setting variable `name` (upper case) in `environ` under any
    spelling of its case, the one settings read: of several spellings, the last (as
    pydantic-settings takes them), even an empty one; None when that is empty or unset."""
    found = None
    for variable, value in environ.items():
        if variable.upper() == name:
            found = value
    return found or None


def drop_settings_from(environ: MutableMapping[str, str], names: Iterable[str]) -> None:
    """Remove the variables of the settings `names` (field names) from `environ`, in any
    case, as settings read them: for a process that starts servers of its own, which the
    shell's values for other servers must not reach."""
    dropped = {name.upper() for name in names}
    for variable in [variable for variable in environ if variable.upper() in dropped]:
        del environ[variable]


def misspelt_names(environ: Mapping[str, str], settings: Iterable[str]) -> dict[str, str]:
    """Variables named almost, but not quite, like one of `settings` (field names):
    {variable: the setting's variable}.

    Settings ignore every other variable, so a DATABSE_URL would otherwise leave the
    default in place without a word."""
    settings = sorted(name.upper() for name in settings)
    misspelt = {}
    for variable in environ:
        name = variable.upper()
        if name in settings or _KUBERNETES_SERVICE_VARIABLE.fullmatch(name):
            continue
        for setting in settings:
            allowed = 1 if len(setting) < SHORT_SETTING else MISSPELLING_EDITS
            if _edits_between(name, setting) <= allowed:
                misspelt[variable] = setting
                break
    return misspelt


def _edits_between(a: str, b: str) -> int:
    """Letters added, dropped or changed, and neighbours swapped, to turn `a` into `b`."""
    if abs(len(a) - len(b)) > MISSPELLING_EDITS:
        return MISSPELLING_EDITS + 1  # no need to count
    before, row = None, list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            cost = min(row[j] + 1, current[j - 1] + 1, row[j - 1] + (ca != cb))
            if before is not None and i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cost = min(cost, before[j - 2] + 1)
            current.append(cost)
        before, row = row, current
    return row[-1]
