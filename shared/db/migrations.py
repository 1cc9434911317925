"""Applies the yandex-pgmigrate migrations in db/ to DATABASE_URL.

Run as `python -m shared.db.migrations` (what `make migrate` does); the tests and
the local runner call `apply_migrations` with their own URL.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "db"


def apply_migrations(database_url: str, migrations_dir: Path = MIGRATIONS_DIR) -> None:
    """Bring the schema to the latest version; a no-op when it is already there."""
    command = [
        sys.executable,
        "-m",
        "pgmigrate",
        "--conn",
        database_url,
        "--base_dir",
        str(migrations_dir),
        "--target",
        "latest",
        "migrate",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"pgmigrate failed with exit code {result.returncode}:\n{result.stderr.strip()}"
        )


def main() -> None:
    from shared.settings import get_settings

    apply_migrations(get_settings().database_url)
    print("migrations applied")


if __name__ == "__main__":
    main()
