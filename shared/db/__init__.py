"""PostgreSQL access: the pool and transaction boundary, the repositories, the migrations."""

from shared.db.pool import Database

__all__ = ["Database"]
