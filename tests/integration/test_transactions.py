"""The transaction boundaries of shared/db against a real PostgreSQL: what the in-memory
double of the unit tests (tests/fakes.py) only imitates."""

from __future__ import annotations

import uuid

import pytest

from shared.kafka.envelope import encode_task_message
from shared.kafka.record import ConsumedRecord
from shared.moderation.batch import process_moderation_batch
from shared.moderation.tasks import submit_moderation_task
from tests.integration.database_rows import seed_ads, task_rows
from tests.integration.wiring import wired_services

pytestmark = pytest.mark.integration


class Rollback(Exception):
    """Raised inside a block to end it in failure."""


def test_a_transaction_whose_block_raises_writes_nothing(settings):
    with wired_services(settings) as services:
        (item_id,) = seed_ads(services, 1)

        with pytest.raises(Rollback), services.db.transaction() as tx:
            assert tx.create_task_for_existing_ad(item_id) is not None
            tx.conn.execute("DELETE FROM ads WHERE id = %s", (item_id,))
            raise Rollback

        assert task_rows(services) == []
        with services.db.autocommit() as session:
            assert session.load_ad_with_seller(item_id) is not None


def test_atomic_writes_nothing_when_a_later_statement_fails(settings):
    with wired_services(settings) as services:
        (item_id,) = seed_ads(services, 1)

        with services.db.autocommit() as session:
            with pytest.raises(Rollback), session.atomic():
                assert session.create_task_for_existing_ad(item_id) is not None
                raise Rollback
            # Outside the block, each statement commits on its own again.
            assert session.create_task_for_existing_ad(item_id) is not None

        assert [row[1] for row in task_rows(services)] == [item_id]


def test_a_failure_and_a_verdict_written_together_are_undone_together_when_the_letter_fails(
    settings,
):
    # One task completes and one fails (its ad deleted) in the same attempt, so the
    # verdict, the failure and the dead letter are one transaction. The dead letter's
    # INSERT fails once: the verdict must be undone with it, and the failure, which the
    # attempt's count then writes, must come with its letter.
    fail_once = f"fail_once_{uuid.uuid4().hex[:8]}"
    during_the_wait: list[tuple[list[str], int]] = []
    with wired_services(settings) as services:
        services.sleeper = lambda _s: during_the_wait.append(
            ([row[2] for row in task_rows(services)], _letters(services))
        )
        kept, deleted = seed_ads(services, 2)
        tasks = [submit_moderation_task(services, item).task_id for item in (kept, deleted)]
        records = [
            ConsumedRecord(settings.kafka_moderation_topic, 0, offset, *encode_task_message(t, i))
            for offset, (t, i) in enumerate(zip(tasks, (kept, deleted), strict=True))
        ]
        with services.db.autocommit() as session:
            session.conn.execute("DELETE FROM ads WHERE id = %s", (deleted,))
            session.conn.execute(f"CREATE SEQUENCE {fail_once}")
            session.conn.execute(
                f"""
                CREATE FUNCTION {fail_once}() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    IF nextval('{fail_once}') = 1 THEN
                        RAISE EXCEPTION 'dead letter refused once, by the test';
                    END IF;
                    RETURN NEW;
                END $$;
                CREATE TRIGGER {fail_once} BEFORE INSERT ON dead_letters
                    FOR EACH ROW EXECUTE FUNCTION {fail_once}();
                """
            )
        try:
            report = process_moderation_batch(services, records)
        finally:
            with services.db.autocommit() as session:
                session.conn.execute(f"DROP TRIGGER {fail_once} ON dead_letters")
                session.conn.execute(f"DROP FUNCTION {fail_once}()")
                session.conn.execute(f"DROP SEQUENCE {fail_once}")

        # The refused letter undid the verdict; the failure went in with its letter when
        # the attempt was counted, and the retry completed the other task.
        assert during_the_wait == [(["pending", "failed"], 1)]
        assert [row[2] for row in task_rows(services)] == ["completed", "failed"]
        assert (report.completed, report.failed, report.dead_lettered) == (1, 1, 1)
        with services.db.autocommit() as session:
            letters = session.conn.execute("SELECT task_id FROM dead_letters").fetchall()
        assert letters == [(tasks[1],)]


def _letters(services) -> int:
    with services.db.autocommit() as session:
        return session.conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0]


def test_a_corrupt_copy_behind_its_real_record_in_one_batch_is_rejected_and_the_task_completes(
    settings,
):
    # The read names both ads; the real record's row must keep its own ad, whichever of
    # the two records comes last (the in-memory double once let the last one decide).
    with wired_services(settings) as services:
        item_id, other_item = seed_ads(services, 2)
        task_id = submit_moderation_task(services, item_id).task_id
        records = [
            ConsumedRecord(settings.kafka_moderation_topic, 0, offset, *encode_task_message(*named))
            for offset, named in enumerate([(task_id, item_id), (task_id, other_item)])
        ]

        report = process_moderation_batch(services, records)

        assert [row[2] for row in task_rows(services)] == ["completed"]
        assert (report.completed, report.rejected, report.dead_lettered) == (1, 1, 1)
        with services.db.autocommit() as session:
            letters = session.conn.execute(
                "SELECT task_id, source_offset FROM dead_letters"
            ).fetchall()
        assert letters == [(None, 1)]
