"""The relay's sweeps on the real database and broker: letters and tasks Kafka refuses
never hold back the ones after them, however many there are, and nothing younger than
the grace period is taken."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import psycopg
import pytest

from shared.db.dead_letters import (
    DeadLetter,
    claim_unpublished_dead_letters,
    insert_dead_letters,
    lock_unpublished_dead_letters,
)
from shared.db.tasks import TaskFailure, claim_unpublished_tasks
from shared.errors import BrokerUnavailable
from shared.kafka.config import MAX_RECORD_BYTES
from shared.moderation.relay import (
    relay_unpublished_dead_letters,
    relay_unpublished_tasks,
    relay_until_caught_up,
)
from tests.fakes import FakePublisher
from tests.integration.database_rows import seed_ads
from tests.integration.kafka_records import read_topic
from tests.integration.wiring import wired_services

SWEEP = 2


def _letter(offset: int, value: bytes) -> DeadLetter:
    return DeadLetter(
        task_id=None,
        source_topic="moderation",
        source_partition=0,
        source_offset=offset,
        key=str(offset).encode(),
        value=value,
        headers={"x-error-class": "permanent"},
    )


def test_a_claim_takes_the_letters_that_fit_in_its_bytes_and_at_least_one(settings):
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        # Keys of 1 byte, values of 1,000 and no headers of the record's own ("[]", 2 bytes
        # as the outbox keeps them): 1,003 bytes a letter, the last 3 without a value.
        insert_dead_letters(conn, [_letter(offset, b"v" * 1000) for offset in range(4)])
        insert_dead_letters(conn, [_letter(4, None)])

        def claimed_offsets(max_bytes: int, limit: int = 10) -> tuple[list[int], bool]:
            with conn.transaction():
                claim = claim_unpublished_dead_letters(
                    conn, older_than_s=0, limit=limit, max_bytes=max_bytes
                )
            return [letter.letter.source_offset for letter in claim.letters], claim.full

        # Cut short by its bytes, a claim says it is full: more letters are waiting.
        assert claimed_offsets(2_500) == ([0, 1], True)
        assert claimed_offsets(4_015) == ([0, 1, 2, 3, 4], False)  # the last has no value
        assert claimed_offsets(10) == ([0], True)  # larger than the budget: taken all the same
        assert claimed_offsets(4_015, limit=5) == ([0, 1, 2, 3, 4], True)
        assert claimed_offsets(4_014) == ([0, 1, 2, 3], True)  # a byte short of the last


def test_a_relay_call_goes_on_sweeping_letters_its_bytes_cut_short(settings):
    # A scheduler calls the relay function once a minute: a backlog of large letters,
    # more than one sweep's 16 MiB, must still drain within the call.
    settings = settings.model_copy(update={"outbox_grace_s": 0})
    large = b"x" * 900 * 1024
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        insert_dead_letters(conn, [_letter(offset, large) for offset in range(24)])

    with wired_services(settings) as services:
        published = relay_until_caught_up(services, budget_s=60)

    assert published == 24
    delivered = read_topic(settings, settings.kafka_dlq_topic, expected=24, timeout_s=30)
    assert sorted(int(message.key()) for message in delivered) == list(range(24))


def test_a_relay_call_goes_on_sweeping_a_backlog_of_tasks_larger_than_a_sweep(settings):
    # The backlog an outage leaves: five tasks whose publish failed, sweeps of two.
    settings = settings.model_copy(update={"outbox_grace_s": 0, "outbox_batch_size": SWEEP})
    with wired_services(settings) as services:
        item_ids = seed_ads(services, 5)
        with services.db.transaction() as tx:
            task_ids = [tx.create_task_for_existing_ad(item_id) for item_id in item_ids]

        published = relay_until_caught_up(services, budget_s=60)

    assert published == 5
    delivered = read_topic(settings, settings.kafka_moderation_topic, expected=5)
    assert sorted(json.loads(message.value())["task_id"] for message in delivered) == task_ids


def test_a_full_sweep_of_refused_letters_holds_back_no_later_letter(settings):
    settings = settings.model_copy(update={"outbox_grace_s": 0, "outbox_batch_size": SWEEP})
    too_large = b"x" * (MAX_RECORD_BYTES + 1)  # the producer refuses it, every time
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        # More refused letters than a sweep takes, and older than the two that can go.
        insert_dead_letters(conn, [_letter(offset, too_large) for offset in range(3)])
        insert_dead_letters(conn, [_letter(3, b"not json"), _letter(4, b"{}")])

    with wired_services(settings) as services:
        outcomes = []
        for _ in range(3):
            try:
                outcomes.append(relay_unpublished_dead_letters(services))
            except BrokerUnavailable:
                outcomes.append("refused")  # a sweep of refused letters alone still says so

    delivered = read_topic(settings, settings.kafka_dlq_topic, expected=2)
    assert sorted(message.value() for message in delivered) == [b"not json", b"{}"]
    assert sum(n for n in outcomes if n != "refused") == 2
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(
            "SELECT source_offset, published_at IS NOT NULL, publish_tries"
            " FROM dead_letters ORDER BY source_offset"
        ).fetchall()
    published = {offset for offset, is_published, _ in rows if is_published}
    assert published == {3, 4}
    # Each refused letter was tried, and counted; the ones published never were refused.
    assert all(tries >= 1 for offset, _, tries in rows if offset < 3)
    assert all(tries == 0 for offset, _, tries in rows if offset >= 3)


def test_an_outage_rotates_the_order_and_loses_no_letter(settings):
    settings = settings.model_copy(
        update={
            "outbox_grace_s": 0,
            "outbox_batch_size": SWEEP,
            # No broker listens here: every publish times out, as in an outage.
            "kafka_bootstrap_servers": "127.0.0.1:9",
            "kafka_publish_timeout_s": 1.0,
        }
    )
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        insert_dead_letters(conn, [_letter(offset, b"{}") for offset in range(3)])

    with wired_services(settings) as services:
        for _ in range(3):
            with pytest.raises(BrokerUnavailable):
                relay_unpublished_dead_letters(services)

    with psycopg.connect(settings.database_url) as conn:
        tries = conn.execute(
            "SELECT publish_tries FROM dead_letters WHERE published_at IS NULL"
            " ORDER BY source_offset"
        ).fetchall()
    # Three sweeps of two over three letters: each was claimed twice, none skipped.
    assert [count for (count,) in tries] == [2, 2, 2]


def test_the_relay_leaves_alone_tasks_and_letters_younger_than_the_grace_period(settings):
    # Their own publish may still be on its way; a sweep takes only what is past it.
    settings = settings.model_copy(update={"outbox_grace_s": 60})
    with wired_services(settings) as services:
        young_item, old_item = seed_ads(services, 2)
        with services.db.transaction() as tx:
            young_task = tx.create_task_for_existing_ad(young_item)
            old_task = tx.create_task_for_existing_ad(old_item)
            young_letter, old_letter = (
                stored.id
                for stored in tx.insert_dead_letters([_letter(10, b"young"), _letter(11, b"old")])
            )
            tx.conn.execute(
                "UPDATE moderation_results SET created_at = now() - interval '61 seconds'"
                " WHERE id = %s",
                (old_task,),
            )
            tx.conn.execute(
                "UPDATE dead_letters SET created_at = now() - interval '61 seconds' WHERE id = %s",
                (old_letter,),
            )

        assert relay_unpublished_tasks(services) == 1
        assert relay_unpublished_dead_letters(services) == 1

        with services.db.transaction() as tx:
            published_tasks = {
                row[0]
                for row in tx.conn.execute(
                    "SELECT id FROM moderation_results WHERE published_at IS NOT NULL"
                )
            }
            published_letters = {
                row[0]
                for row in tx.conn.execute(
                    "SELECT id FROM dead_letters WHERE published_at IS NOT NULL"
                )
            }
    assert published_tasks == {old_task}
    assert published_letters == {old_letter}
    assert young_task not in published_tasks
    assert young_letter not in published_letters


def test_the_backlog_counts_only_unpublished_pending_rows_past_the_grace_period_and_ages_the_oldest(
    settings,
):
    settings = settings.model_copy(update={"outbox_grace_s": 60})
    with wired_services(settings) as services:
        items = seed_ads(services, 5)
        with services.db.transaction() as tx:
            tasks = [tx.create_task_for_existing_ad(item) for item in items]
            letters = [s.id for s in tx.insert_dead_letters([_letter(n, b"v") for n in (1, 2, 3)])]
            # Past the grace period: four tasks (one of them published, one failed)
            # and two letters (one published). The fifth task and third letter are young.
            tx.conn.execute(
                "UPDATE moderation_results SET created_at = now() - interval '61 seconds'"
                " WHERE id = ANY(%s)",
                (tasks[:4],),
            )
            tx.conn.execute(
                "UPDATE dead_letters SET created_at = now() - interval '61 seconds'"
                " WHERE id = ANY(%s)",
                (letters[:2],),
            )
            tx.mark_tasks_published([tasks[0]])
            tx.fail_tasks([TaskFailure(tasks[1], "Ad not found", 1)])
            tx.mark_dead_letters_published([letters[0]])

        with services.db.autocommit() as session:
            measured = (
                session.measure_unpublished_tasks(older_than_s=60, cap=100),
                session.measure_unpublished_dead_letters(older_than_s=60, cap=100),
                session.measure_unpublished_tasks(older_than_s=0, cap=100),
                session.measure_unpublished_tasks(older_than_s=0, cap=2),
                session.measure_unpublished_tasks(older_than_s=3600, cap=100),
            )

    assert [backlog.rows for backlog in measured] == [2, 1, 3, 2, 0]
    # The oldest waiting row was written 61 s ago (and a young one too with no grace).
    for backlog in measured[:3]:
        assert 61 <= backlog.oldest_age_s < 61 + 30, backlog
    assert measured[4].oldest_age_s == 0


def test_a_second_relay_takes_the_tasks_the_first_has_not_claimed_without_waiting(settings):
    # Any number of relays may sweep at once: a claim skips the rows another holds,
    # which it keeps locked while it publishes, instead of queueing behind them.
    with wired_services(settings) as services:
        items = seed_ads(services, 3)
        with services.db.transaction() as tx:
            tasks = {tx.create_task_for_existing_ad(item) for item in items}
    with (
        psycopg.connect(settings.database_url) as first,
        psycopg.connect(settings.database_url) as second,
    ):
        held = claim_unpublished_tasks(first, older_than_s=0, limit=1)  # its transaction stays open
        second.execute("SET lock_timeout = '2s'")  # a claim that waited would fail here

        taken = claim_unpublished_tasks(second, older_than_s=0, limit=10)

        assert len(held) == 1
        assert {task for task, _ in taken} == tasks - {task for task, _ in held}


@contextmanager
def _claim_held_open(
    database_url: str, letters: int, limit: int
) -> Iterator[tuple[list[int], list[int], psycopg.Connection]]:
    """Store `letters` letters and claim up to `limit` of them in a transaction left open,
    as a relay's sweep holds its claim until their publish commits. Yields the stored
    ids, the claimed ones, and a second connection that waits no more than 2 s on a lock
    (one that waited would fail there)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        stored = insert_dead_letters(conn, [_letter(offset, b"{}") for offset in range(letters)])
    with psycopg.connect(database_url) as relay, psycopg.connect(database_url) as other:
        held = claim_unpublished_dead_letters(relay, older_than_s=0, limit=limit)
        other.execute("SET lock_timeout = '2s'")
        yield [item.id for item in stored], [item.id for item in held.letters], other


def test_a_second_relay_claims_none_of_the_letters_the_first_holds(database_url):
    # A letter another relay could claim meanwhile would reach the DLQ topic twice.
    with _claim_held_open(database_url, letters=3, limit=2) as (stored, held, second):
        taken = claim_unpublished_dead_letters(second, older_than_s=0, limit=10)

    assert len(held) == 2
    assert {item.id for item in taken.letters} == set(stored) - set(held)


def test_the_consumer_locks_none_of_its_letters_a_relays_claim_holds(database_url):
    # The consumer publishes its just-stored letters only if it can lock them: those a
    # sweep has claimed meanwhile are the relay's to publish, and would go out twice.
    with _claim_held_open(database_url, letters=2, limit=10) as (stored, held, consumer):
        locked = lock_unpublished_dead_letters(consumer, stored)

    assert held == stored
    assert locked == []


class _PublisherHeldOpen(FakePublisher):
    """Blocks inside its first publish until released, as a broker slow to acknowledge."""

    def __init__(self) -> None:
        super().__init__()
        self.publishing = threading.Event()
        self.release = threading.Event()

    def publish(self, records) -> None:
        self.publishing.set()
        if not self.release.wait(timeout=30):
            raise AssertionError("the held publish was never released")
        super().publish(records)


def test_two_relay_processes_sweeping_at_once_publish_every_task_exactly_once(settings):
    # The same claim as above, through the relay's own transaction: the first relay's
    # rows stay locked while its publish hangs, and the second sweeps the rest meanwhile.
    settings = settings.model_copy(update={"outbox_grace_s": 0, "outbox_batch_size": 2})
    held, other = _PublisherHeldOpen(), FakePublisher()
    with (
        wired_services(settings, publisher=held) as first,
        wired_services(settings, publisher=other) as second,
        ThreadPoolExecutor(max_workers=1) as background,
    ):
        items = seed_ads(first, 5)
        with first.db.transaction() as tx:
            tasks = {tx.create_task_for_existing_ad(item) for item in items}
        first_sweep = background.submit(relay_unpublished_tasks, first)
        assert held.publishing.wait(timeout=10), "the first relay never published"

        # A sweep that queued behind the held rows would wait here until the held
        # publish gives up (30 s), and the first relay would then fail.
        swept_meanwhile = [relay_unpublished_tasks(second), relay_unpublished_tasks(second)]
        held.release.set()
        first_published = first_sweep.result(timeout=30)

        with first.db.autocommit() as session:
            unpublished = session.conn.execute(
                "SELECT count(*) FROM moderation_results WHERE published_at IS NULL"
            ).fetchone()[0]
    task_ids = [json.loads(r.value)["task_id"] for r in [*held.published, *other.published]]
    assert (first_published, swept_meanwhile) == (2, [2, 1])
    assert sorted(task_ids) == sorted(tasks)  # each once, between the two
    assert unpublished == 0


def test_tasks_kafka_refuses_hold_back_no_newer_task(settings):
    # One partition offline: every publish of its tasks fails, and they fill the backlog
    # ahead of a task of a healthy partition whose own publish missed.
    settings = settings.model_copy(update={"outbox_grace_s": 0, "outbox_batch_size": SWEEP})
    publisher = FakePublisher()  # the broker's side; the claims are PostgreSQL's
    with wired_services(settings, publisher=publisher) as services:
        *offline_items, healthy_item = seed_ads(services, 4)
        offline_keys = {str(item_id).encode() for item_id in offline_items}
        publisher.refuses = lambda record: record.key in offline_keys
        with services.db.transaction() as tx:
            offline = [tx.create_task_for_existing_ad(item_id) for item_id in offline_items]
            healthy = tx.create_task_for_existing_ad(healthy_item)
            # One transaction gives them one created_at: the healthy one is the newest.
            tx.conn.execute(
                "UPDATE moderation_results SET created_at = created_at - interval '1 minute'"
                " WHERE id = ANY(%s)",
                (offline,),
            )

        outcomes = []
        for _ in range(3):
            try:
                outcomes.append(relay_unpublished_tasks(services))
            except BrokerUnavailable:
                outcomes.append("refused")

        with services.db.transaction() as tx:
            rows = dict(
                tx.conn.execute(
                    "SELECT id, publish_tries FROM moderation_results WHERE published_at IS NULL"
                ).fetchall()
            )
    # The first sweep's two oldest were refused and counted; the next claimed past them.
    assert outcomes[0] == "refused"
    assert [json.loads(record.value)["task_id"] for record in publisher.published] == [healthy]
    assert set(rows) == set(offline)
    assert all(tries >= 1 for tries in rows.values())
