"""The session's Kafka and PostgreSQL are the real thing: a KRaft broker and a migrated server."""

from __future__ import annotations

import contextlib
import os
import re
import stat
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import (
    AdminClient,
    ConfigResource,
    ConfigSource,
    NewTopic,
    ResourceType,
)
from psycopg.conninfo import conninfo_to_dict

from infra import _unprivileged_user
from infra.kafka_broker import KafkaBroker
from infra.postgres_server import PostgresServer
from shared.kafka.config import MAX_RECORD_BYTES
from shared.kafka.topics import TopicSetupError, delete_topics, describe, ensure_topics
from shared.settings import Settings
from tests.must_run import skip_or_fail

TIMEOUT_S = 20.0


def _admin(bootstrap_servers: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap_servers})


def _consume_one(bootstrap_servers: str, topic: str, group: str) -> tuple[bytes, bytes]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error():
                if message.error().code() == KafkaError._PARTITION_EOF:
                    continue
                pytest.fail(f"consuming {topic} failed: {message.error()}")
            return message.key(), message.value()
        pytest.fail(f"no message arrived on {topic} within {TIMEOUT_S:.0f} s")
    finally:
        consumer.close()


def _produce(bootstrap_servers: str, topic: str, key: bytes, value: bytes) -> None:
    producer = Producer({"bootstrap.servers": bootstrap_servers, "acks": "all"})
    delivered = []
    producer.produce(
        topic, key=key, value=value, on_delivery=lambda err, _msg: delivered.append(err)
    )
    assert producer.flush(TIMEOUT_S) == 0, f"the record to {topic} was not delivered in time"
    assert delivered == [None], f"delivery to {topic} failed: {delivered}"


def test_a_record_produced_to_a_fresh_topic_is_consumed_back(infra) -> None:
    topic = f"infra-roundtrip-{uuid.uuid4().hex[:8]}"
    admin = _admin(infra.kafka_bootstrap_servers)
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(
        timeout=TIMEOUT_S
    )
    try:
        _produce(infra.kafka_bootstrap_servers, topic, b"item-42", b'{"item_id": 42}')

        key, value = _consume_one(infra.kafka_bootstrap_servers, topic, f"infra-{uuid.uuid4().hex}")

        assert (key, value) == (b"item-42", b'{"item_id": 42}')
    finally:
        admin.delete_topics([topic])[topic].result(timeout=TIMEOUT_S)


def test_the_cluster_is_one_kraft_node_that_is_both_broker_and_controller(infra) -> None:
    admin = _admin(infra.kafka_bootstrap_servers)

    cluster = admin.describe_cluster(request_timeout=TIMEOUT_S).result(timeout=TIMEOUT_S)
    (node,) = cluster.nodes
    broker_config = admin.describe_configs([ConfigResource(ResourceType.BROKER, str(node.id))])
    config = next(iter(broker_config.values())).result(timeout=TIMEOUT_S)

    assert cluster.cluster_id
    assert cluster.controller is not None and cluster.controller.id == node.id
    # Only a KRaft node has process.roles; a ZooKeeper-mode broker had zookeeper.connect.
    assert config["process.roles"].value == "broker,controller"
    assert config["controller.quorum.voters"].value.startswith(f"{node.id}@")
    assert "zookeeper.connect" not in config
    if infra.kafka is not None:
        # The metadata lives in the broker's own Raft log, formatted with this cluster id.
        assert (infra.kafka.data_dir / "__cluster_metadata-0").is_dir()
        assert infra.kafka.cluster_id() == cluster.cluster_id


def test_ensure_topics_creates_both_topics_with_their_partition_counts_and_can_run_again(
    settings: Settings,
) -> None:
    ensure_topics(settings)  # a second time, after the fixture's: must not fail

    topics = _admin(settings.kafka_bootstrap_servers).list_topics(timeout=TIMEOUT_S).topics

    assert len(topics[settings.kafka_moderation_topic].partitions) == 3
    assert len(topics[settings.kafka_dlq_topic].partitions) == settings.kafka_dlq_partitions


def test_ensure_topics_sets_each_topics_own_configs_on_the_broker(settings: Settings) -> None:
    names = [settings.kafka_moderation_topic, settings.kafka_dlq_topic]
    resources = [ConfigResource(ResourceType.TOPIC, name) for name in names]

    admin = _admin(settings.kafka_bootstrap_servers)  # held: its futures die with it
    futures = admin.describe_configs(resources)
    configs = {
        resource.name: future.result(timeout=TIMEOUT_S) for resource, future in futures.items()
    }

    for name in names:
        in_sync = configs[name]["min.insync.replicas"]
        # Set on the topic, not inherited: a broker default would not follow the topic.
        assert (in_sync.value, in_sync.source) == ("1", ConfigSource.DYNAMIC_TOPIC_CONFIG.value)
        assert configs[name]["max.message.bytes"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value


def test_an_existing_topic_keeps_its_partitions_and_the_report_says_so(settings: Settings) -> None:
    more = settings.model_copy(update={"kafka_moderation_partitions": 6})

    partitions = ensure_topics(more)  # the fixture made it with 3

    assert partitions[settings.kafka_moderation_topic] == 3
    report = describe(more, partitions)
    assert (
        f"{settings.kafka_moderation_topic} (3 partitions; KAFKA_MODERATION_PARTITIONS asks for 6"
        in report
    )
    assert f"{settings.kafka_dlq_topic} (1 partitions)" in report


@contextlib.contextmanager
def _topics_made_elsewhere(
    settings: Settings, moderation: dict[str, str], dlq: dict[str, str]
) -> Iterator[Settings]:
    """Both topics of a fresh pair, made beforehand with `moderation` and `dlq` as their
    settings, as Terraform or a managed console would; deleted at the end."""
    suffix = uuid.uuid4().hex[:8]
    own = settings.model_copy(
        update={"kafka_moderation_topic": f"tasks-{suffix}", "kafka_dlq_topic": f"dlq-{suffix}"}
    )
    admin = _admin(settings.kafka_bootstrap_servers)
    made = admin.create_topics(
        [
            NewTopic(own.kafka_moderation_topic, num_partitions=1, config=moderation),
            NewTopic(own.kafka_dlq_topic, num_partitions=1, config=dlq),
        ]
    )
    for future in made.values():
        future.result(timeout=TIMEOUT_S)
    try:
        yield own
    finally:
        delete_topics(own)


@pytest.mark.parametrize(
    ("moderation", "dlq", "refusal"),
    [
        ({"cleanup.policy": "compact"}, {}, "cleanup.policy=compact, which keeps only the last"),
        ({}, {"cleanup.policy": "compact,delete"}, "cleanup.policy=compact,delete"),
        ({"max.message.bytes": "20"}, {}, "max.message.bytes=20, too small for a task record"),
    ],
    ids=["compacted-tasks", "compacted-letters", "tasks-too-small"],
)
def test_existing_topics_whose_settings_would_lose_or_refuse_tasks_are_refused_by_name(
    settings: Settings, moderation, dlq, refusal
) -> None:
    with (
        _topics_made_elsewhere(settings, moderation, dlq) as own,
        pytest.raises(TopicSetupError, match=re.escape(refusal)),
    ):
        ensure_topics(own)


@pytest.mark.parametrize(
    ("moderation", "dlq", "warning"),
    [
        ({"retention.ms": "3000"}, {}, "{tasks!r} keeps records for 3 s (retention.ms)"),
        # What two topics made with a broker's defaults (1 MiB each) look like.
        ({}, {"max.message.bytes": "1048588"}, "{dlq!r} has max.message.bytes=1048588, less"),
    ],
    ids=["short-retention", "letters-no-larger-than-tasks"],
)
def test_existing_topics_that_may_hold_back_records_are_taken_with_a_warning(
    settings: Settings, caplog, moderation, dlq, warning
) -> None:
    default_sizes = {"max.message.bytes": str(MAX_RECORD_BYTES)}
    with _topics_made_elsewhere(settings, moderation, {**default_sizes, **dlq}) as own:
        partitions = ensure_topics(own)

    assert partitions == {own.kafka_moderation_topic: 1, own.kafka_dlq_topic: 1}
    expected = warning.format(tasks=own.kafka_moderation_topic, dlq=own.kafka_dlq_topic)
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert sum(expected in message for message in warned) == 1, warned


def test_the_database_is_migrated_and_emptied_for_each_test(database_url: str) -> None:
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        counts = [
            conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("sellers", "ads", "moderation_results", "dead_letters")
        ]
        server_version = conn.info.server_version

    assert counts == [0, 0, 0, 0]
    assert server_version >= 180000


@pytest.mark.fault
def test_a_restarted_broker_keeps_its_address_and_its_records(infra) -> None:
    if infra.kafka is None:
        skip_or_fail("the broker is external (KAFKA_BOOTSTRAP_SERVERS); it is not ours to restart")
    topic = f"infra-restart-{uuid.uuid4().hex[:8]}"
    admin = _admin(infra.kafka_bootstrap_servers)
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(
        timeout=TIMEOUT_S
    )
    try:
        _produce(infra.kafka_bootstrap_servers, topic, b"k", b"before the restart")
        address, old_pid = infra.kafka.bootstrap_servers, infra.kafka.pid

        try:
            infra.kafka.restart()
        finally:
            infra.kafka.start()  # a no-op when it runs; the session needs it either way

        assert infra.kafka.bootstrap_servers == address
        assert infra.kafka.pid not in (None, old_pid)
        record = _consume_one(address, topic, f"infra-{uuid.uuid4().hex}")
        assert record == (b"k", b"before the restart")
    finally:
        admin.delete_topics([topic])[topic].result(timeout=TIMEOUT_S)


@pytest.mark.fault
def test_a_stopped_and_started_postgres_keeps_its_address_and_its_rows(
    database_url: str, infra
) -> None:
    if infra.postgres is None:
        skip_or_fail("the database is external (DATABASE_URL); it is not ours to stop")
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        conn.execute("INSERT INTO sellers (is_verified) VALUES (true)")

    infra.postgres.stop()
    try:
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(database_url, connect_timeout=2)
    finally:
        infra.postgres.start()  # running again whatever happened: the session needs it

    assert infra.postgres.url == database_url
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        assert conn.execute("SELECT count(*) FROM sellers").fetchone()[0] == 1


def test_a_postgres_started_on_a_port_another_server_holds_fails_instead_of_using_it(
    infra, tmp_path
) -> None:
    if infra.postgres is None:
        skip_or_fail("the database is external (DATABASE_URL); there is no server of ours")
    # The other server answers at once, while ours is still on its way to failing to
    # bind the port, but it takes only its own password: ours never gets in, and says
    # why once it has exited. (One that let it in, of trust, would be told apart by the
    # data directory it reports: "taken by another server".)
    second = PostgresServer(tmp_path / "second", port=infra.postgres.port)

    with pytest.raises(RuntimeError, match="exited during start-up") as refused:
        second.start()

    assert "Address already in use" in str(refused.value)
    assert not second.is_running()
    with psycopg.connect(infra.postgres.url, connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the first one untouched


def test_a_fresh_postgres_takes_only_its_superusers_password_kept_in_a_0600_file(
    tmp_path,
) -> None:
    # Every local account reaches 127.0.0.1; a superuser runs programs as the server's user.
    server = PostgresServer(tmp_path / "own")
    server.start()
    try:
        password = conninfo_to_dict(server.url)["password"]
        kept = server.password_path.stat()
        account = _unprivileged_user.account_for_postgres()  # initdb, as it, read the file
        without = f"postgresql://postgres@127.0.0.1:{server.port}/moderation"

        for wrong in ({"passfile": os.devnull}, {"password": "not-the-password"}):
            with pytest.raises(psycopg.OperationalError, match="password"):
                psycopg.connect(without, connect_timeout=5, **wrong)
        with psycopg.connect(server.url, connect_timeout=5) as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
        # `make infra-up` run again takes the running server over, password and all.
        assert PostgresServer(server.base_dir).url == server.url
    finally:
        server.stop()

    assert len(password) >= 32
    assert stat.S_IMODE(kept.st_mode) == 0o600
    assert kept.st_uid == (account.uid if account else os.geteuid())


@pytest.mark.fault
def test_a_broker_started_on_a_port_another_broker_holds_fails_instead_of_using_it(
    infra, tmp_path
) -> None:
    if infra.kafka is None:
        skip_or_fail("the broker is external (KAFKA_BOOTSTRAP_SERVERS); there is none of ours")
    # Its own controller, SASL and SSL ports are free; only the client port is taken.
    second = KafkaBroker(tmp_path / "second", port=infra.kafka.port)
    try:
        with pytest.raises(RuntimeError, match="taken by another broker"):
            second.start()
        assert not second.is_running()
    finally:
        if second.is_running():  # a kill would wait for the port, which is not its own
            second.kill()

    admin = _admin(infra.kafka_bootstrap_servers)  # held: a client collected ends its calls
    cluster = admin.describe_cluster(request_timeout=10).result(timeout=15)
    assert cluster.cluster_id == infra.kafka.cluster_id()  # the first one untouched


def test_a_refused_topic_leaves_the_missing_one_uncreated(settings: Settings) -> None:
    # Only `moderation` exists, compacted: the job refuses it before it makes the DLQ.
    suffix = uuid.uuid4().hex[:8]
    own = settings.model_copy(
        update={"kafka_moderation_topic": f"tasks-{suffix}", "kafka_dlq_topic": f"dlq-{suffix}"}
    )
    admin = _admin(settings.kafka_bootstrap_servers)
    compacted = NewTopic(own.kafka_moderation_topic, 1, config={"cleanup.policy": "compact"})
    admin.create_topics([compacted])[own.kafka_moderation_topic].result(timeout=TIMEOUT_S)
    try:
        with pytest.raises(TopicSetupError, match=re.escape("cleanup.policy=compact")):
            ensure_topics(own)

        listed = admin.list_topics(timeout=TIMEOUT_S).topics
        assert own.kafka_moderation_topic in listed
        assert own.kafka_dlq_topic not in listed
    finally:
        delete_topics(own)
