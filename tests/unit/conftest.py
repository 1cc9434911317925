"""Fixtures of the unit tests: in-memory services installed for the handlers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared.bootstrap import Services
from shared.domain import Ad
from tests.fakes import fake_services, installed


@pytest.fixture
def services() -> Iterator[Services]:
    """Fake services, with stored ad 1 (a violation for FakeModel), wired into the handlers."""
    services = fake_services()
    services.db.add_ad(Ad(1, 1, False, "SPAM phone", "call me", 3, 0))
    with installed(services):
        yield services
