"""The functions and the consumer through real Kafka and PostgreSQL: every delivery rule."""

from __future__ import annotations

import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
import requests
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from functions_framework import create_app
from werkzeug.serving import make_server

from shared.db.tasks import TaskFailure, republish_pending_tasks
from shared.kafka.config import consumer_config
from shared.kafka.envelope import encode_task_message
from shared.kafka.record import ConsumedRecord
from shared.kafka.topics import delete_topics
from shared.moderation.batch import process_moderation_batch
from shared.moderation.relay import relay_once
from shared.runner.cli import RunnerOptions
from shared.runner.embedded import Backends
from shared.runner.local import prepare_data
from tests.fakes import ModelUnavailableAtFirst
from tests.integration.database_rows import seed_ads, task_rows
from tests.integration.kafka_records import produce_raw, read_topic, records_on
from tests.integration.wiring import running_consumer, wired_services
from tests.python_snippets import run_module
from tests.waiting import wait_until


def _submit(item_id: int) -> int:
    response = (
        create_app("async_predict", "functions/async_predict/main.py")
        .test_client()
        .post(f"/async_predict?item_id={item_id}")
    )
    assert response.status_code == 202, response.get_data(as_text=True)
    return response.get_json()["task_id"]


def _statuses(services) -> dict[int, str]:
    return {row[0]: row[2] for row in task_rows(services)}


def _all_finished(services, count: int) -> bool:
    statuses = _statuses(services)
    return len(statuses) == count and all(s != "pending" for s in statuses.values())


def _headers(message) -> dict[str, str]:
    return {name: value.decode() for name, value in message.headers() or []}


def test_accepted_task_is_completed_through_kafka_with_a_verdict(settings):
    with wired_services(settings) as services:
        (item_id,) = seed_ads(services, 1)
        task_id = _submit(item_id)

        with running_consumer(services):
            wait_until(lambda: _all_finished(services, 1), timeout_s=30, what="task completed")

        result = create_app("moderation_result", "functions/moderation_result/main.py")
        body = result.test_client().get(f"/moderation_result/{task_id}").get_json()
        assert body["status"] == "completed" and body["attempts"] == 1
        assert 0 <= body["probability"] <= 1 and body["model_version"].startswith("moderation-")
        assert body["processed_at"] is not None and body["error"] is None
        assert records_on(settings, settings.kafka_dlq_topic) == 0


def test_ad_deleted_before_processing_marks_task_failed_and_dead_letters_it_with_the_envelope(
    settings,
):
    with wired_services(settings) as services:
        (item_id,) = seed_ads(services, 1)
        task_id = _submit(item_id)
        with services.db.transaction() as tx:
            tx.conn.execute("DELETE FROM ads WHERE id = %s", (item_id,))

        with running_consumer(services):
            wait_until(lambda: _all_finished(services, 1), timeout_s=30, what="task failed")

        (row,) = task_rows(services)
        assert row[2] == "failed" and row[4] == "Ad not found"
        (letter,) = read_topic(settings, settings.kafka_dlq_topic, expected=1)
        key, value = encode_task_message(task_id, item_id)
        assert (letter.key(), letter.value()) == (key, value)
        headers = _headers(letter)
        assert headers["x-error-class"] == "permanent"
        assert headers["x-exception-type"] == "AdNotFound"
        assert headers["x-exception-message"] == "Ad not found"
        assert headers["x-attempts"] == "1"
        assert headers["x-task-id"] == str(task_id)
        assert headers["x-source-topic"] == settings.kafka_moderation_topic
        assert headers["x-consumer-group"] == settings.kafka_consumer_group
        assert int(headers["x-source-offset"]) >= 0
        assert headers["x-first-failure-at"] <= headers["x-last-failure-at"]
        with services.db.transaction() as tx:
            (letter_id,) = tx.conn.execute("SELECT id FROM dead_letters").fetchone()
        assert headers["x-dead-letter-id"] == str(letter_id)
        body = (
            create_app("moderation_result", "functions/moderation_result/main.py")
            .test_client()
            .get(f"/moderation_result/{task_id}")
        )
        assert body.status_code == 200 and body.get_json()["error"] == "Ad not found"


def test_a_task_is_read_back_by_its_own_id_not_by_its_ads(settings):
    # A task for the second ad gets id 1 on a fresh database: the ids differ, so a lookup
    # by the wrong column would answer for another task, or for none.
    with wired_services(settings) as services:
        [_, second] = seed_ads(services, 2)
        with services.db.transaction() as tx:
            task_id = tx.create_task_for_existing_ad(second)
        with services.db.autocommit() as session:
            task = session.get_task(task_id)

    assert task is not None
    assert (task.id, task.item_id, task.status) == (task_id, second, "pending")


def test_temporary_model_outage_is_retried_then_completed_without_a_dlq_record(settings):
    with wired_services(settings) as services:
        services.model = ModelUnavailableAtFirst(services.model, failures=2)
        seed_ads(services, 1)
        _submit(1)

        with running_consumer(services):
            wait_until(lambda: _all_finished(services, 1), timeout_s=30, what="task completed")

        (row,) = task_rows(services)
        assert row[2] == "completed" and row[3] == 3
        assert records_on(settings, settings.kafka_dlq_topic) == 0


def test_model_outage_on_every_attempt_fails_the_task_with_one_dlq_record_of_four_attempts(
    settings,
):
    with wired_services(settings) as services:
        services.model = ModelUnavailableAtFirst(services.model, failures=1000)
        seed_ads(services, 1)
        _submit(1)

        with running_consumer(services):
            wait_until(lambda: _all_finished(services, 1), timeout_s=30, what="task failed")

        (row,) = task_rows(services)
        assert row[2] == "failed" and row[3] == 4
        (letter,) = read_topic(settings, settings.kafka_dlq_topic, expected=1)
        assert _headers(letter)["x-error-class"] == "exhausted"
        assert _headers(letter)["x-attempts"] == "4"
        assert _headers(letter)["x-exception-type"] == "ModelUnavailable"


def test_duplicate_delivery_yields_one_result_and_never_moves_a_finished_task(settings):
    with wired_services(settings) as services:
        item_ids = seed_ads(services, 2)
        done_task = _submit(item_ids[0])
        gone_task = _submit(item_ids[1])
        with services.db.transaction() as tx:
            tx.conn.execute("DELETE FROM ads WHERE id = %s", (item_ids[1],))
        with running_consumer(services):
            wait_until(lambda: _all_finished(services, 2), timeout_s=30, what="both finished")
        before = task_rows(services)

        produce_raw(
            settings,
            [
                encode_task_message(done_task, item_ids[0]),
                encode_task_message(gone_task, item_ids[1]),
            ]
            * 2,
        )
        with running_consumer(services):
            wait_until(
                lambda: _committed_offset(settings) >= 6, timeout_s=30, what="redeliveries consumed"
            )

        assert task_rows(services) == before
        assert len(read_topic(settings, settings.kafka_dlq_topic, expected=1)) == 1


def _committed_offset(settings) -> int:
    consumer = Consumer(consumer_config(settings))
    try:
        partitions = [
            TopicPartition(settings.kafka_moderation_topic, p)
            for p in range(settings.kafka_moderation_partitions)
        ]
        committed = consumer.committed(partitions, timeout=10)
        return sum(max(tp.offset, 0) for tp in committed)
    finally:
        consumer.close()


def test_crash_between_db_commit_and_offset_commit_redelivers_without_duplicating(settings):
    with wired_services(settings) as services:
        seed_ads(services, 3)
        for item_id in (1, 2, 3):
            _submit(item_id)
        # A consumer that commits the results and dies before storing any offset.
        crashing = Consumer(consumer_config(settings))
        crashing.subscribe([settings.kafka_moderation_topic])
        consumed = []
        wait_until(
            lambda: (
                consumed.extend(m for m in crashing.consume(10, 0.5) if not m.error())
                or len(consumed) >= 3
            ),
            timeout_s=30,
            what="the three tasks consumed",
        )
        process_moderation_batch(services, [ConsumedRecord.from_message(m) for m in consumed])
        crashing.close()  # no offsets were stored, so nothing is committed
        finished = task_rows(services)
        assert all(row[2] == "completed" for row in finished)

        reports = []

        def record_report(records):
            report = process_moderation_batch(services, records)
            reports.append(report)
            return report

        with running_consumer(services, record_report):
            wait_until(
                lambda: sum(r.records for r in reports) >= 3, timeout_s=30, what="redelivery"
            )

        assert sum(r.duplicates for r in reports) == 3
        assert sum(r.completed for r in reports) == 0
        assert task_rows(services) == finished


def test_crash_between_task_insert_and_publish_still_gets_the_task_processed(settings):
    with wired_services(settings) as services:
        (item_id,) = seed_ads(services, 1)
        # The process died right after committing the row: nothing reached Kafka.
        with services.db.transaction() as tx:
            task_id = tx.create_task_for_existing_ad(item_id)

        with running_consumer(services):
            wait_until(lambda: relay_once(services), timeout_s=10, what="the relay to publish")
            wait_until(lambda: _all_finished(services, 1), timeout_s=30, what="task completed")

        assert task_rows(services)[0][:3] == (task_id, item_id, "completed")


@pytest.mark.parametrize("in_memory_kafka", [True, False], ids=["in-memory", "real broker"])
def test_a_runner_restarted_on_its_own_database_publishes_its_pending_tasks_again(
    settings, tmp_path, in_memory_kafka
):
    with wired_services(settings) as services:
        (item_id,) = seed_ads(services, 1)
        # Acknowledged by the in-memory broker of the last run, which took the record along,
        # whether this run has the same kind of broker or a real one.
        with services.db.transaction() as tx:
            task_id = tx.create_task_for_existing_ad(item_id)
            tx.mark_tasks_published([task_id])
        # The runner's own database: with any other, the in-memory Kafka is refused.
        backends = Backends(
            settings, embedded_database=True, in_memory_kafka=in_memory_kafka, state_dir=tmp_path
        )

        prepare_data(backends, RunnerOptions(settings, "127.0.0.1", False, tmp_path))

        with running_consumer(services):
            wait_until(lambda: relay_once(services), timeout_s=10, what="the relay to publish")
            wait_until(lambda: _all_finished(services, 1), timeout_s=30, what="task completed")

        assert task_rows(services)[0][:3] == (task_id, item_id, "completed")


def test_a_runner_refuses_the_in_memory_kafka_with_a_database_others_may_use(settings, tmp_path):
    backends = Backends(settings, embedded_database=False, in_memory_kafka=True, state_dir=tmp_path)

    with pytest.raises(RuntimeError, match="Set KAFKA_BOOTSTRAP_SERVERS too"):
        prepare_data(backends, RunnerOptions(settings, "127.0.0.1", False, tmp_path))


def test_a_runner_refuses_the_default_kafka_names_on_a_real_broker_with_its_own_database(
    settings, tmp_path
):
    # The default group on a shared broker would split `moderation` with other deployments.
    shared = settings.model_copy(update={"kafka_consumer_group": "moderation-consumer"})
    backends = Backends(shared, embedded_database=True, in_memory_kafka=False, state_dir=tmp_path)

    with pytest.raises(RuntimeError, match="default KAFKA_CONSUMER_GROUP its consumer would"):
        prepare_data(backends, RunnerOptions(shared, "127.0.0.1", False, tmp_path))


def test_a_runner_takes_a_real_broker_with_its_own_database_under_names_of_its_own(
    settings, database_url, tmp_path
):
    # Topics and a database that do not exist yet: the runner makes the topics and
    # migrates the database itself.
    suffix = uuid.uuid4().hex[:8]
    fresh_database = f"runner_{suffix}"
    own = settings.model_copy(
        update={
            "kafka_moderation_topic": f"runner-tasks-{suffix}",
            "kafka_dlq_topic": f"runner-dlq-{suffix}",
            "database_url": psycopg.conninfo.make_conninfo(database_url, dbname=fresh_database),
        }
    )
    backends = Backends(own, embedded_database=True, in_memory_kafka=False, state_dir=tmp_path)
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {fresh_database}")
    try:
        prepare_data(backends, RunnerOptions(own, "127.0.0.1", False, tmp_path))

        metadata = AdminClient({"bootstrap.servers": own.kafka_bootstrap_servers}).list_topics(
            timeout=10
        )
        partitions = {
            name: len(metadata.topics[name].partitions)
            for name in (own.kafka_moderation_topic, own.kafka_dlq_topic)
            if name in metadata.topics
        }
        assert partitions == {
            own.kafka_moderation_topic: own.kafka_moderation_partitions,
            own.kafka_dlq_topic: own.kafka_dlq_partitions,
        }
        with psycopg.connect(own.database_url) as migrated:
            tables = migrated.execute(
                "SELECT to_regclass('moderation_results'), to_regclass('idempotency_keys')"
            ).fetchone()
        assert tables == ("moderation_results", "idempotency_keys")
    finally:
        delete_topics(own)
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {fresh_database} WITH (FORCE)")


def test_malformed_records_around_valid_ones_are_dead_lettered_and_the_rest_complete(settings):
    with wired_services(settings) as services:
        seed_ads(services, 2)
        first, second = _submit(1), _submit(2)
        poison = [
            (b"1", b"not json"),
            (None, b'{"task_id": "x", "item_id": 1}'),
            (b"1", b"\xff\xfe"),
            (b"1", None),
            (b"1", json.dumps({"task_id": 10**30, "item_id": 1}).encode()),
        ]
        produce_raw(settings, poison)
        produce_raw(settings, [encode_task_message(first, 1)])  # a redelivery, harmless

        with running_consumer(services):
            wait_until(lambda: _all_finished(services, 2), timeout_s=30, what="valid tasks")
            letters = read_topic(settings, settings.kafka_dlq_topic, expected=len(poison))

        # Both tasks completed once: the redelivery of the first changed nothing.
        assert [row[:4] for row in task_rows(services)] == [
            (first, 1, "completed", 1),
            (second, 2, "completed", 1),
        ]
        assert sorted(m.value() or b"" for m in letters) == sorted(v or b"" for _, v in poison)
        assert all(_headers(m)["x-exception-type"] == "MalformedMessage" for m in letters)


def test_fifty_concurrent_async_predict_calls_give_fifty_distinct_completed_tasks(settings):
    with wired_services(settings) as services:
        item_ids = seed_ads(services, 50)
        app = create_app("async_predict", "functions/async_predict/main.py")
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{server.server_port}/async_predict"
        try:
            with ThreadPoolExecutor(max_workers=50) as pool:
                responses = list(
                    pool.map(
                        lambda item_id: requests.post(url, params={"item_id": item_id}, timeout=10),
                        item_ids,
                    )
                )
        finally:
            server.shutdown()

        assert [r.status_code for r in responses] == [202] * 50
        task_ids = {r.json()["task_id"] for r in responses}
        assert len(task_ids) == 50
        with running_consumer(services):
            wait_until(lambda: _all_finished(services, 50), timeout_s=60, what="50 tasks")
        assert set(_statuses(services).values()) == {"completed"}


def test_twenty_concurrent_retries_with_one_idempotency_key_make_one_task_published_once(
    settings,
):
    with wired_services(settings) as services:
        [item_id, other_item] = seed_ads(services, 2)
        app = create_app("async_predict", "functions/async_predict/main.py")
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{server.server_port}/async_predict"
        key = {"Idempotency-Key": f"retry-{uuid.uuid4()}"}
        try:
            with ThreadPoolExecutor(max_workers=20) as pool:
                responses = list(
                    pool.map(
                        lambda _: requests.post(
                            url, params={"item_id": item_id}, headers=key, timeout=10
                        ),
                        range(20),
                    )
                )
            reused = requests.post(url, params={"item_id": other_item}, headers=key, timeout=10)
        finally:
            server.shutdown()

        assert [r.status_code for r in responses] == [202] * 20
        assert len({r.json()["task_id"] for r in responses}) == 1
        # Exactly one request made the task; every other one was told it was a replay.
        assert sum(r.headers.get("Idempotent-Replayed") != "true" for r in responses) == 1
        assert reused.status_code == 422 and "another ad" in reused.json()["detail"]
        assert [row[:2] for row in task_rows(services)] == [
            (responses[0].json()["task_id"], item_id)
        ]
        assert records_on(settings, settings.kafka_moderation_topic) == 1


@pytest.mark.parametrize("item_id", ["abc", "1.5", "0", "-1", str(2**63)])
def test_simple_predict_and_async_predict_reject_bad_item_ids_against_the_real_database(
    settings, item_id
):
    with wired_services(settings) as services:
        seed_ads(services, 1)
        for target, folder in (("simple_predict", "predict"), ("async_predict", "async_predict")):
            client = create_app(target, f"functions/{folder}/main.py").test_client()
            response = client.post(f"/{target}?item_id={item_id}")
            assert response.status_code == 422 and "detail" in response.get_json()
        assert task_rows(services) == []


def test_simple_predict_scores_a_stored_ad_and_404s_an_unknown_one(settings):
    with wired_services(settings) as services:
        seed_ads(services, 1)
        client = create_app("simple_predict", "functions/predict/main.py").test_client()

        found = client.post("/simple_predict?item_id=1")
        missing = client.post("/simple_predict?item_id=999")

        assert found.status_code == 200 and found.get_json()["item_id"] == 1
        assert missing.status_code == 404 and missing.get_json() == {"detail": "Ad not found"}
        unknown_async = (
            create_app("async_predict", "functions/async_predict/main.py")
            .test_client()
            .post("/async_predict?item_id=999")
        )
        assert unknown_async.status_code == 404 and task_rows(services) == []


def test_a_batch_waiting_out_a_retry_stalls_only_its_own_partition(settings):
    with wired_services(settings) as services:
        seed_ads(services, 2)
        release = threading.Event()
        processed_partitions: list[int] = []

        def handle(records):
            if records[0].partition == 0 and not release.is_set():
                # Stands in for a batch sleeping through the 5/10/20 s schedule.
                release.wait(timeout=30)
            report = process_moderation_batch(services, records)
            processed_partitions.append(records[0].partition)
            return report

        with services.db.transaction() as tx:
            blocked_task = tx.create_task_for_existing_ad(1)
            free_task = tx.create_task_for_existing_ad(2)
        producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers})
        for task_id, item_id, partition in ((blocked_task, 1, 0), (free_task, 2, 1)):
            key, value = encode_task_message(task_id, item_id)
            producer.produce(settings.kafka_moderation_topic, value, key, partition=partition)
        assert producer.flush(15) == 0

        with running_consumer(services, handle):
            wait_until(lambda: 1 in processed_partitions, timeout_s=30, what="partition 1 done")
            statuses = _statuses(services)
            assert statuses[free_task] == "completed" and statuses[blocked_task] == "pending"
            release.set()
            wait_until(lambda: _all_finished(services, 2), timeout_s=30, what="both tasks")


def test_failing_a_task_never_lowers_the_attempts_its_row_already_counts(settings):
    with wired_services(settings) as services:
        [item_id] = seed_ads(services, 1)
        with services.db.transaction() as tx:
            task_id = tx.create_task_for_existing_ad(item_id)
            # An earlier owner counted six attempts; this one counted four in memory.
            tx.conn.execute("UPDATE moderation_results SET attempts = 6 WHERE id = %s", (task_id,))
            failed = tx.fail_tasks([TaskFailure(task_id, "gave up after 4 attempts: x", 4)])

        assert failed == {task_id}
        assert task_rows(services)[0][2:4] == ("failed", 6)


def test_republish_goes_chunk_after_chunk_and_passes_by_a_task_being_finished(conn, database_url):
    conn.execute(
        "INSERT INTO moderation_results (item_id, published_at)"
        " SELECT 1, now() - interval '1 hour' FROM generate_series(1, 5)"
    )
    [held] = conn.execute("SELECT min(id) FROM moderation_results").fetchone()
    conn.execute("SET statement_timeout = '5s'")  # waiting on the held row would fail

    # A consumer finishing the first task holds its row until it commits.
    with psycopg.connect(database_url) as consumer:
        consumer.execute("UPDATE moderation_results SET attempts = 1 WHERE id = %s", (held,))
        handed_back = republish_pending_tasks(conn, published_before_s=600, chunk_rows=2)
        consumer.rollback()

    assert handed_back == 4
    still_published = conn.execute(
        "SELECT id FROM moderation_results WHERE published_at IS NOT NULL"
    ).fetchall()
    assert still_published == [(held,)]


def test_republish_with_an_age_of_zero_hands_back_a_task_published_just_now(conn, database_url):
    # A broker that lost its disk lost its newest records too: 0 s is a cutoff to accept.
    conn.execute("INSERT INTO moderation_results (item_id, published_at) VALUES (1, now())")

    result = run_module(
        "shared.moderation.republish",
        "--published-before-s",
        "0",
        env={"DATABASE_URL": database_url},
    )

    assert result.returncode == 0, result.stderr
    assert "1 pending task(s) handed to the outbox relay" in result.stdout


def test_republish_hands_back_only_pending_tasks_published_before_the_cutoff(
    settings, database_url
):
    with wired_services(settings) as services:
        item_ids = seed_ads(services, 4)
        with services.db.transaction() as tx:
            old, fresh, finished, unpublished = (
                tx.create_task_for_existing_ad(item_id) for item_id in item_ids
            )
            tx.conn.execute(
                "UPDATE moderation_results SET published_at = now() - interval '1 hour'"
                " WHERE id = ANY(%s)",
                ([old, finished],),
            )
            tx.conn.execute(
                "UPDATE moderation_results SET published_at = now() WHERE id = %s", (fresh,)
            )
            tx.fail_tasks([TaskFailure(finished, "Ad not found", 1)])

        result = run_module(
            "shared.moderation.republish",
            "--published-before-s",
            "600",
            env={"DATABASE_URL": database_url},
        )

        assert result.returncode == 0, result.stderr
        assert "1 pending task(s) handed to the outbox relay" in result.stdout
        with services.db.transaction() as tx:
            unpublished_now = {
                row[0]
                for row in tx.conn.execute(
                    "SELECT id FROM moderation_results WHERE published_at IS NULL"
                )
            }
        assert unpublished_now == {old, unpublished}
