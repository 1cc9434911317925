"""Everything the service layer may do on one pooled connection, in a transaction or not.

The service code talks to this class, never to SQL; the unit tests hand the
service an in-memory double with the same methods instead.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import psycopg

from shared.db import ads, dead_letters, idempotency_keys, tasks
from shared.db.dead_letters import DeadLetter, StoredDeadLetter
from shared.db.outbox_backlog import OutboxBacklog
from shared.db.tasks import FailedAttempts, TaskFailure, TaskForProcessing, TaskRow
from shared.domain import Ad, BatchVerdicts


class Session:
    """The statements of the service layer on one pooled connection.

    Atomic only as a whole when it comes from `Database.transaction()`, or inside
    `atomic()`; from `Database.autocommit()` each statement commits on its own (a
    repository function that writes several rows opens its own transaction block).
    """

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    @contextmanager
    def atomic(self) -> Iterator[Session]:
        """The block's statements as one transaction, on a connection from `autocommit()`."""
        with self.conn.transaction():
            yield self

    def load_ad_with_seller(self, item_id: int) -> Ad | None:
        return ads.load_ad_with_seller(self.conn, item_id)

    def create_task_for_existing_ad(self, item_id: int) -> int | None:
        return tasks.create_task_for_existing_ad(self.conn, item_id)

    def create_keyed_task(
        self, item_id: int, key: str, *, key_ttl_s: float
    ) -> idempotency_keys.KeyedTask | None:
        return idempotency_keys.create_keyed_task(self.conn, item_id, key, key_ttl_s=key_ttl_s)

    def delete_expired_idempotency_keys(self, *, limit: int) -> int:
        return idempotency_keys.delete_expired_idempotency_keys(self.conn, limit=limit)

    def mark_tasks_published(self, task_ids: Sequence[int]) -> None:
        tasks.mark_tasks_published(self.conn, task_ids)

    def measure_unpublished_tasks(self, *, older_than_s: float, cap: int) -> OutboxBacklog:
        return tasks.measure_unpublished_tasks(self.conn, older_than_s=older_than_s, cap=cap)

    def measure_unpublished_dead_letters(self, *, older_than_s: float, cap: int) -> OutboxBacklog:
        return dead_letters.measure_unpublished_dead_letters(
            self.conn, older_than_s=older_than_s, cap=cap
        )

    def claim_unpublished_tasks(self, *, older_than_s: float, limit: int) -> list[tuple[int, int]]:
        return tasks.claim_unpublished_tasks(self.conn, older_than_s=older_than_s, limit=limit)

    def count_task_publish_tries(self, task_ids: Sequence[int]) -> None:
        tasks.count_publish_tries(self.conn, task_ids)

    def get_task(self, task_id: int) -> TaskRow | None:
        return tasks.get_task(self.conn, task_id)

    def load_tasks_with_ads(
        self, tasks_named: Sequence[tuple[int, int]]
    ) -> dict[int, TaskForProcessing]:
        return tasks.load_tasks_with_ads(self.conn, tasks_named)

    def complete_tasks(self, task_ids: Sequence[int], verdicts: BatchVerdicts) -> set[int]:
        return tasks.complete_tasks(self.conn, task_ids, verdicts)

    def fail_tasks(self, failures: Sequence[TaskFailure]) -> set[int]:
        return tasks.fail_tasks(self.conn, failures)

    def record_failed_attempt(
        self, tasks_as_named: Sequence[tuple[int, int]], reason: str
    ) -> dict[int, FailedAttempts]:
        return tasks.record_failed_attempt(self.conn, tasks_as_named, reason)

    def insert_dead_letters(self, letters: Sequence[DeadLetter]) -> list[StoredDeadLetter]:
        return dead_letters.insert_dead_letters(self.conn, letters)

    def lock_unpublished_dead_letters(self, ids: Sequence[int]) -> list[int]:
        return dead_letters.lock_unpublished_dead_letters(self.conn, ids)

    def mark_dead_letters_published(self, ids: Sequence[int]) -> None:
        dead_letters.mark_dead_letters_published(self.conn, ids)

    def claim_unpublished_dead_letters(
        self, *, older_than_s: float, limit: int
    ) -> dead_letters.LetterClaim:
        return dead_letters.claim_unpublished_dead_letters(
            self.conn, older_than_s=older_than_s, limit=limit
        )

    def count_dead_letter_publish_tries(self, ids: Sequence[int]) -> None:
        dead_letters.count_publish_tries(self.conn, ids)
