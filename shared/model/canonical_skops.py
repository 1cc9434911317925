"""Rewrites a skops file so that the same model always gives the same bytes.

skops names objects and array files after `id()` (memory addresses), a fitted
vectorizer holds one address itself, and zip entries carry the clock; here ids are
renumbered in order of appearance, array files renamed to match, the address zeroed,
entries sorted and stamped with a fixed date. Stored uncompressed, so the
bytes do not depend on the zlib build either. Loading is unchanged: the renumbering
keeps every reference, only the names differ.
"""

from __future__ import annotations

import io
import json
from typing import Any
from zipfile import ZIP_STORED, ZipFile, ZipInfo

SCHEMA_FILE = "schema.json"
# Attributes that hold a memory address: scikit-learn's vectorizers cache id(stop_words)
# only to skip re-checking the stop words, so any constant loads to the same behaviour.
_ADDRESS_ATTRIBUTES = {"_stop_words_id"}
_FIXED_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip entry can hold
_UNIX = 3


def canonical_skops_bytes(data: bytes) -> bytes:
    with ZipFile(io.BytesIO(data)) as source:
        schema = json.loads(source.read(SCHEMA_FILE))
        files = {name: source.read(name) for name in source.namelist() if name != SCHEMA_FILE}
    renamed: dict[str, str] = {}
    _renumber(schema, ids={}, files=files, renamed=renamed)
    # A file no node names is never read by skops, so it is left out.
    entries = {new_name: files[old_name] for old_name, new_name in renamed.items()}
    entries[SCHEMA_FILE] = json.dumps(schema, indent=2).encode()
    buffer = io.BytesIO()
    with ZipFile(buffer, "w", compression=ZIP_STORED) as target:
        for name in sorted(entries):
            info = ZipInfo(name, date_time=_FIXED_DATE)
            info.create_system = _UNIX
            info.external_attr = 0o644 << 16
            target.writestr(info, entries[name])
    return buffer.getvalue()


def _renumber(
    node: Any, ids: dict[int, int], files: dict[str, bytes], renamed: dict[str, str]
) -> None:
    if isinstance(node, list):
        for item in node:
            _renumber(item, ids, files, renamed)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key == "__id__" and isinstance(value, int):
            # Ids start at 1: skops skips memoising a falsy id.
            node[key] = ids.setdefault(value, len(ids) + 1)
        elif key in _ADDRESS_ATTRIBUTES and isinstance(value, dict) and "content" in value:
            value["content"] = "0"
            _renumber(value, ids, files, renamed)
        elif key == "file" and isinstance(value, str) and value in files:
            if value not in renamed:
                suffix = value[value.rfind(".") :] if "." in value else ""
                renamed[value] = f"{len(renamed) + 1}{suffix}"
            node[key] = renamed[value]
        else:
            _renumber(value, ids, files, renamed)
