"""What the local runner prints once it runs: the example item_id is the demo's only
where the runner seeded the demo ads."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from shared.runner.cli import RunnerOptions
from shared.runner.embedded import Backends
from shared.runner.local import print_banner
from shared.settings import Settings


@pytest.mark.parametrize(
    ("embedded_database", "seed_demo", "example"),
    [
        (True, None, "item_id=1"),
        (False, None, "item_id={item_id}"),
        (False, True, "item_id=1"),
        (True, False, "item_id={item_id}"),
    ],
)
def test_the_banners_example_names_a_demo_ad_only_where_they_were_seeded(
    capsys, embedded_database, seed_demo, example
):
    settings = Settings()
    backends = Backends(settings, embedded_database, in_memory_kafka=True, state_dir=Path("."))
    options = RunnerOptions(settings, "127.0.0.1", seed_demo, Path("."))
    running = SimpleNamespace(
        server=SimpleNamespace(port=8000),
        services=SimpleNamespace(model=SimpleNamespace(get=lambda: SimpleNamespace(version="v1"))),
    )

    print_banner(backends, options, running)  # type: ignore[arg-type]

    banner = capsys.readouterr().out
    assert f"http://localhost:8000/simple_predict?{example}\n" in banner
    assert f"http://localhost:8000/async_predict?{example}\n" in banner


@pytest.mark.parametrize(
    ("host", "base"),
    [
        ("127.0.0.1", "http://localhost:8000"),
        ("0.0.0.0", "http://localhost:8000"),
        ("::", "http://localhost:8000"),
        ("::1", "http://[::1]:8000"),
        ("fe80::1%eth0", "http://[fe80::1%eth0]:8000"),
        ("10.0.0.5", "http://10.0.0.5:8000"),
        ("devbox", "http://devbox:8000"),
    ],
)
def test_the_banners_urls_can_be_used_as_printed(capsys, host, base):
    settings = Settings()
    backends = Backends(settings, True, in_memory_kafka=True, state_dir=Path("."))
    running = SimpleNamespace(
        server=SimpleNamespace(port=8000),
        services=SimpleNamespace(model=SimpleNamespace(get=lambda: SimpleNamespace(version="v1"))),
    )

    print_banner(backends, RunnerOptions(settings, host, None, Path(".")), running)  # type: ignore[arg-type]

    assert f"Ad moderation is running on {base} (Ctrl-C stops it)" in capsys.readouterr().out


def test_the_banner_gives_the_embedded_databases_url_and_hides_a_given_one():
    # The embedded server's port is picked at each start: the banner is where to find it.
    embedded_url = "postgresql://postgres@127.0.0.1:54329/moderation"
    embedded = Backends(
        Settings(database_url=embedded_url), True, in_memory_kafka=True, state_dir=Path(".")
    )
    given = Backends(
        Settings(database_url="postgresql://app:secret@db/m"),
        False,
        in_memory_kafka=True,
        state_dir=Path("."),
    )

    assert f"embedded PostgreSQL at {embedded_url}," in embedded.describe()[0]
    assert given.describe()[0] == "database: PostgreSQL from DATABASE_URL"


def test_the_banner_masks_the_embedded_databases_password_and_says_where_it_is():
    url = "postgresql://postgres:s3cr3t-Pw_x@127.0.0.1:54329/moderation"
    embedded = Backends(
        Settings(database_url=url), True, in_memory_kafka=True, state_dir=Path("state")
    )

    (line, _) = embedded.describe()

    assert "s3cr3t" not in line
    assert (
        "embedded PostgreSQL at postgresql://postgres:****@127.0.0.1:54329/moderation"
        " (password in state/postgres/password), data in state/postgres"
    ) in line
