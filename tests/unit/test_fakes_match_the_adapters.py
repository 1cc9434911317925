"""The in-memory fake of the database takes the calls the real one does, so that a unit
test cannot pass against an operation the service could not make."""

from __future__ import annotations

import inspect

from shared.db.session import Session
from tests.fakes import InMemorySession


def _operations(cls: type) -> dict[str, list[tuple[str, object, object]]]:
    """Each public method's parameters: name, kind and default (annotations are left out:
    the fake names its own types)."""
    return {
        name: [
            (parameter.name, parameter.kind, parameter.default)
            for parameter in inspect.signature(method).parameters.values()
        ]
        for name, method in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_")
    }


def test_the_in_memory_session_has_every_operation_of_the_real_one_with_its_parameters():
    real, fake = _operations(Session), _operations(InMemorySession)

    assert sorted(real) == sorted(fake)
    assert {name: fake[name] for name in real} == real
