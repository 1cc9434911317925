"""In-memory doubles of the adapters, passed into `Services` by the unit tests."""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg

from shared.bootstrap import Services, install_services
from shared.db.dead_letters import DeadLetter, LetterClaim, StoredDeadLetter
from shared.db.idempotency_keys import EXPIRED_KEY_KEPT_S, KeyedTask
from shared.db.outbox_backlog import OutboxBacklog
from shared.db.tasks import (
    FailedAttempts,
    TaskFailure,
    TaskForProcessing,
    TaskRow,
)
from shared.domain import Ad, BatchVerdicts, Verdict
from shared.errors import (
    BrokerUnavailable,
    DatabaseUnavailable,
    ModelUnavailable,
    PartlyAcknowledged,
)
from shared.kafka.record import OutgoingRecord
from shared.settings import Settings

# A valid /predict body.
VALID_AD = {
    "seller_id": 1,
    "is_verified_seller": True,
    "item_id": 10,
    "name": "Bicycle",
    "description": "A good bicycle",
    "category": 3,
    "images_qty": 2,
}


@dataclass
class _State:
    ads: dict[int, Ad] = field(default_factory=dict)
    tasks: dict[int, TaskRow] = field(default_factory=dict)
    published: set[int] = field(default_factory=set)
    # key: (task_id, expires_at)
    idempotency_keys: dict[str, tuple[int, datetime]] = field(default_factory=dict)
    first_failures: dict[int, datetime] = field(default_factory=dict)
    letters: dict[int, DeadLetter] = field(default_factory=dict)
    letters_published: set[int] = field(default_factory=set)
    letter_publish_tries: dict[int, int] = field(default_factory=dict)
    task_publish_tries: dict[int, int] = field(default_factory=dict)
    letters_created_at: dict[int, datetime] = field(default_factory=dict)
    next_task_id: int = 1


def _backlog_of(created: list[datetime]) -> OutboxBacklog:
    """As the SQL's count and age of the oldest, among the rows it counted."""
    if not created:
        return OutboxBacklog(0, 0.0)
    return OutboxBacklog(len(created), (datetime.now(UTC) - min(created)).total_seconds())


def _older_than(created_at: datetime, seconds: float) -> bool:
    """As the SQL's `created_at < now() - make_interval(secs => ...)`."""
    return created_at < datetime.now(UTC) - timedelta(seconds=seconds)


class InMemoryDatabase:
    """The Database's transaction contract over dicts: a failed block leaves no trace."""

    def __init__(self) -> None:
        self.state = _State()
        self.unavailable_for = 0  # the next N transactions raise DatabaseUnavailable
        self.transactions = 0
        # `intercepts[name] = f`: each call of the transactions' method `name` becomes
        # `f(method, *args, **kwargs)`, `method` being the real one (bound; its
        # `__self__.state` is what the transaction sees): to fail or race a step.
        self.intercepts = Intercepts()

    def add_ad(self, ad: Ad) -> None:
        self.state.ads[ad.item_id] = ad

    @contextmanager
    def transaction(self) -> Iterator[InMemorySession]:
        self._connect()
        working = copy.deepcopy(self.state)
        yield InMemorySession(working, self.intercepts)
        self.state = working

    @contextmanager
    def autocommit(self) -> Iterator[InMemorySession]:
        """Each call takes effect at once, as each statement commits on its own."""
        self._connect()
        yield InMemorySession(self.state, self.intercepts)

    def _connect(self) -> None:
        self.transactions += 1
        if self.unavailable_for > 0:
            self.unavailable_for -= 1
            raise DatabaseUnavailable("PostgreSQL unavailable: fake outage")

    def ping(self, timeout_s: float | None = None) -> None:
        if self.unavailable_for:
            raise DatabaseUnavailable("fake outage")

    def close(self, timeout_s: float = 5.0) -> None:
        pass


Intercept = Callable[..., Any]


class Intercepts(dict[str, Intercept]):
    """Intercepts by method name; a name that is not a method of the transactions is
    refused, so that a typo cannot leave a test without the fault it is about."""

    def __setitem__(self, name: str, intercept: Intercept) -> None:
        if name.startswith("_") or not callable(getattr(InMemorySession, name, None)):
            raise KeyError(f"InMemorySession has no method {name!r} to intercept")
        super().__setitem__(name, intercept)


class InMemorySession:
    def __init__(self, state: _State, intercepts: Intercepts | None = None) -> None:
        self.state = state
        self._intercepts = Intercepts() if intercepts is None else intercepts

    def __getattribute__(self, name: str) -> Any:
        # Fault injection without patching the class: InMemoryDatabase.intercepts.
        attribute = object.__getattribute__(self, name)
        # From __dict__: a copy being built has none yet.
        intercepts = object.__getattribute__(self, "__dict__").get("_intercepts", {})
        intercept = intercepts.get(name)
        return attribute if intercept is None else functools.partial(intercept, attribute)

    def load_ad_with_seller(self, item_id: int) -> Ad | None:
        return self.state.ads.get(item_id)

    def create_task_for_existing_ad(self, item_id: int) -> int | None:
        if item_id not in self.state.ads:
            return None
        task_id = self.state.next_task_id
        self.state.next_task_id += 1
        self.state.tasks[task_id] = TaskRow(
            task_id, item_id, "pending", None, None, None, None, 0, datetime.now(UTC), None
        )
        return task_id

    def create_keyed_task(self, item_id: int, key: str, *, key_ttl_s: float) -> KeyedTask | None:
        now = datetime.now(UTC)
        earlier = self.state.idempotency_keys.get(key)
        if earlier is not None and earlier[1] > now:
            task_id = earlier[0]
            return KeyedTask(task_id, self.state.tasks[task_id].item_id, created=False)
        task_id = self.create_task_for_existing_ad(item_id)
        if task_id is None:
            return None
        self.state.idempotency_keys[key] = (task_id, now + timedelta(seconds=key_ttl_s))
        return KeyedTask(task_id, item_id, created=True)

    def delete_expired_idempotency_keys(self, *, limit: int) -> int:
        deadline = datetime.now(UTC) - timedelta(seconds=EXPIRED_KEY_KEPT_S)
        expired = sorted(
            (expires_at, key)
            for key, (_, expires_at) in self.state.idempotency_keys.items()
            if expires_at <= deadline
        )[:limit]
        for _, key in expired:
            del self.state.idempotency_keys[key]
        return len(expired)

    def mark_tasks_published(self, task_ids: Sequence[int]) -> None:
        self.state.published.update(task_ids)

    def measure_unpublished_tasks(self, *, older_than_s: float, cap: int) -> OutboxBacklog:
        waiting = [
            t.created_at
            for t in self.state.tasks.values()
            if t.status == "pending"
            and t.id not in self.state.published
            and _older_than(t.created_at, older_than_s)
        ]
        return _backlog_of(waiting[:cap])

    def measure_unpublished_dead_letters(self, *, older_than_s: float, cap: int) -> OutboxBacklog:
        waiting = [
            self.state.letters_created_at[i]
            for i in self.state.letters
            if i not in self.state.letters_published
            and _older_than(self.state.letters_created_at[i], older_than_s)
        ]
        return _backlog_of(waiting[:cap])

    def claim_unpublished_tasks(self, *, older_than_s: float, limit: int) -> list[tuple[int, int]]:
        unpublished = [
            t
            for t in self.state.tasks.values()
            if t.status == "pending"
            and t.id not in self.state.published
            and _older_than(t.created_at, older_than_s)
        ]
        unpublished.sort(key=lambda t: (self.state.task_publish_tries.get(t.id, 0), t.created_at))
        return [(t.id, t.item_id) for t in unpublished[:limit]]

    def count_task_publish_tries(self, task_ids: Sequence[int]) -> None:
        for task_id in task_ids:
            if task_id not in self.state.published:
                self.state.task_publish_tries[task_id] = (
                    self.state.task_publish_tries.get(task_id, 0) + 1
                )

    def get_task(self, task_id: int) -> TaskRow | None:
        return self.state.tasks.get(task_id)

    @contextmanager
    def atomic(self) -> Iterator[InMemorySession]:
        """All of the block's calls or none (on `autocommit()`'s live state too)."""
        saved = copy.deepcopy(self.state)
        try:
            yield self
        except BaseException:
            self.state.__dict__.update(saved.__dict__)
            raise

    def load_tasks_with_ads(
        self, tasks_named: Sequence[tuple[int, int]]
    ) -> dict[int, TaskForProcessing]:
        named_items = {item_id for _, item_id in tasks_named}
        return {
            t.id: TaskForProcessing(
                t.id,
                t.item_id,
                t.status,
                t.attempts,
                self.state.first_failures.get(t.id),
                # As the SQL does: only ads some record of the batch names are read.
                self.state.ads.get(t.item_id) if t.item_id in named_items else None,
            )
            for task_id, _ in tasks_named
            if (t := self.state.tasks.get(task_id))
        }

    def complete_tasks(self, task_ids: Sequence[int], verdicts: BatchVerdicts) -> set[int]:
        assert len(task_ids) == verdicts.probability.size
        changed = set()
        # A dict, so that a task given twice gets its last verdict, as the SQL gives it.
        columns = dict(
            zip(
                task_ids,
                zip(verdicts.is_violation.tolist(), verdicts.probability.tolist(), strict=True),
                strict=True,
            )
        )
        for task_id, (is_violation, probability) in columns.items():
            task = self.state.tasks[task_id]
            if task.status == "pending":
                self.state.tasks[task_id] = replace(
                    task,
                    status="completed",
                    is_violation=is_violation,
                    probability=probability,
                    model_version=verdicts.model_version,
                    attempts=task.attempts + 1,
                    error_message=None,
                    processed_at=datetime.now(UTC),
                )
                changed.add(task_id)
        return changed

    def fail_tasks(self, failures: Sequence[TaskFailure]) -> set[int]:
        changed = set()
        # The last failure given for a task is the one written, as the SQL writes it.
        for failure in {failure.task_id: failure for failure in failures}.values():
            task = self.state.tasks.get(failure.task_id)
            if task is not None and task.status == "pending":
                self.state.tasks[failure.task_id] = replace(
                    task,
                    status="failed",
                    error_message=failure.reason,
                    attempts=max(task.attempts, failure.attempts),
                    processed_at=datetime.now(UTC),
                )
                changed.add(failure.task_id)
        return changed

    def record_failed_attempt(
        self, tasks_as_named: Sequence[tuple[int, int]], reason: str
    ) -> dict[int, FailedAttempts]:
        counts = {}
        for task_id, item_id in tasks_as_named:
            task = self.state.tasks.get(task_id)
            if task is None or task.status != "pending" or task.item_id != item_id:
                continue
            first = self.state.first_failures.setdefault(task_id, datetime.now(UTC))
            self.state.tasks[task_id] = replace(
                task, attempts=task.attempts + 1, error_message=reason
            )
            failing_for_s = (datetime.now(UTC) - first).total_seconds()
            counts[task_id] = FailedAttempts(task.attempts + 1, first, failing_for_s)
        return counts

    def insert_dead_letters(self, letters: Sequence[DeadLetter]) -> list[StoredDeadLetter]:
        stored = []
        for letter in letters:
            if letter.task_id is not None and letter.task_id not in self.state.tasks:
                # dead_letters.task_id references moderation_results, as in PostgreSQL.
                raise psycopg.errors.ForeignKeyViolation(
                    f"dead letter for task {letter.task_id}, which does not exist"
                )
            # As migration V0003's unique index: the position together with the record.
            duplicate = any(
                (
                    old.source_topic,
                    old.source_partition,
                    old.source_offset,
                    old.key,
                    old.value,
                )
                == (
                    letter.source_topic,
                    letter.source_partition,
                    letter.source_offset,
                    letter.key,
                    letter.value,
                )
                or (letter.task_id is not None and old.task_id == letter.task_id)
                for old in self.state.letters.values()
            )
            if not duplicate:
                letter_id = len(self.state.letters) + 1
                self.state.letters[letter_id] = letter
                self.state.letters_created_at[letter_id] = datetime.now(UTC)
                stored.append(StoredDeadLetter(letter_id, letter))
        return stored

    def lock_unpublished_dead_letters(self, ids: Sequence[int]) -> list[int]:
        return [i for i in ids if i not in self.state.letters_published]

    def mark_dead_letters_published(self, ids: Sequence[int]) -> None:
        self.state.letters_published.update(ids)

    def claim_unpublished_dead_letters(self, *, older_than_s: float, limit: int) -> LetterClaim:
        unpublished = [
            i
            for i in self.state.letters
            if i not in self.state.letters_published
            and _older_than(self.state.letters_created_at[i], older_than_s)
        ]
        unpublished.sort(key=lambda i: (self.state.letter_publish_tries.get(i, 0), i))
        claimed = [StoredDeadLetter(i, self.state.letters[i]) for i in unpublished[:limit]]
        return LetterClaim(claimed, full=len(unpublished) >= limit)

    def count_dead_letter_publish_tries(self, ids: Sequence[int]) -> None:
        for i in ids:
            if i not in self.state.letters_published:
                self.state.letter_publish_tries[i] = self.state.letter_publish_tries.get(i, 0) + 1


class FakeModel:
    version = "fake-model-1"
    threshold = 0.5

    def __init__(self) -> None:
        self.calls: list[int] = []

    def predict(self, ads: list[Ad]) -> list[Verdict]:
        """Deterministic: an ad whose name says SPAM is a violation."""
        self.calls.append(len(ads))
        verdicts = []
        for ad in ads:
            probability = 0.9 if "SPAM" in ad.name else 0.1
            verdicts.append(Verdict(ad.item_id, probability >= 0.5, probability, self.version))
        return verdicts

    def predict_batch(self, ads: list[Ad]) -> BatchVerdicts:
        verdicts = self.predict(ads)
        return BatchVerdicts(
            np.array([v.is_violation for v in verdicts], dtype=np.bool_),
            np.array([v.probability for v in verdicts], dtype=np.float64),
            self.version,
        )


class FakeModelLoader:
    def __init__(self, model: FakeModel | None = None, *, fail_times: int = 0) -> None:
        self.model = model or FakeModel()
        self.fail_times = fail_times
        self.loads = 0
        self.served = False

    def get(self) -> FakeModel:
        self.loads += 1
        if self.fail_times > 0:
            self.fail_times -= 1
            raise ModelUnavailable("model unavailable: fake outage")
        self.served = True
        return self.model

    def loaded(self) -> FakeModel | None:
        """Loaded once a `get()` succeeded, as ModelLoader's model is."""
        return self.model if self.served else None


class ModelUnavailableAtFirst:
    """A real model loader that raises ModelUnavailable on its first `failures` loads."""

    def __init__(self, real, failures: int) -> None:
        self.real = real
        self.outage = FakeModelLoader(fail_times=failures)

    def get(self):
        self.outage.get()
        return self.real.get()

    def loaded(self):
        return self.real.loaded() if self.outage.fail_times == 0 else None


class FakePublisher:
    def __init__(self) -> None:
        self.published: list[OutgoingRecord] = []
        self.fail_times = 0
        # Records the broker refuses, as it refuses one over a topic's size limit.
        self.refuses: Callable[[OutgoingRecord], bool] = lambda record: False

    def publish(self, records: list[OutgoingRecord]) -> None:
        if self.fail_times > 0:
            self.fail_times -= 1
            raise BrokerUnavailable("Kafka did not acknowledge: fake outage")
        acknowledged = [not self.refuses(record) for record in records]
        self.published.extend(r for r, taken in zip(records, acknowledged, strict=True) if taken)
        if not all(acknowledged):
            raise PartlyAcknowledged("Kafka rejected a record: MSG_SIZE_TOO_LARGE", acknowledged)

    def on_topic(self, topic: str) -> list[OutgoingRecord]:
        return [record for record in self.published if record.topic == topic]

    def ping(self, timeout_s: float = 2.0) -> None:
        pass

    def close(self, timeout_s: float = 5.0) -> None:
        pass


class RecordingSleep:
    """Stands in for Services.sleep: records the schedule instead of waiting it out."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def fake_services(**settings_overrides: object) -> Services:
    settings = Settings(database_url="postgresql://unused", **settings_overrides)
    services = Services(
        settings=settings,
        db=InMemoryDatabase(),
        model=FakeModelLoader(),
        publisher=FakePublisher(),
        sleeper=RecordingSleep(),
    )
    return services


@contextmanager
def installed(services: Services) -> Iterator[Services]:
    """`services` wired into the handlers for the block, and taken out after it."""
    install_services(services)
    try:
        yield services
    finally:
        install_services(None)
