"""The configuration files of a single-node KRaft broker: server.properties, log4j2.properties."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path

from infra._process import LOCALHOST
from infra.kafka_tls import KEYSTORE_PASSWORD

NODE_ID = 1
# The one account of the broker's SASL_SSL listener (mechanism PLAIN), which the tests
# of KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_* and KAFKA_SSL_CA_LOCATION connect with.
SASL_USERNAME = "moderation"
SASL_PASSWORD = "moderation-secret"


def server_properties(
    *, port: int, controller_port: int, sasl_port: int, keystore: Path, log_dir: Path
) -> str:
    """One process that is both broker and controller, listening on 127.0.0.1 only: on
    `port` in plaintext without authentication, and on `sasl_port` over TLS (the
    certificate in `keystore`) for SASL_USERNAME alone."""
    jaas = (
        "org.apache.kafka.common.security.plain.PlainLoginModule required"
        f' user_{SASL_USERNAME}="{SASL_PASSWORD}";'
    )
    settings = {
        "process.roles": "broker,controller",
        "node.id": NODE_ID,
        # A static quorum: unlike a --standalone (dynamic) one, it does not write
        # the controller's address into the metadata log, so the ports may change
        # between runs over the same data (`infra up` after the old port got taken).
        "controller.quorum.voters": f"{NODE_ID}@{LOCALHOST}:{controller_port}",
        "listeners": (
            f"PLAINTEXT://{LOCALHOST}:{port},CONTROLLER://{LOCALHOST}:{controller_port},"
            f"SASL_SSL://{LOCALHOST}:{sasl_port}"
        ),
        "advertised.listeners": (
            f"PLAINTEXT://{LOCALHOST}:{port},SASL_SSL://{LOCALHOST}:{sasl_port}"
        ),
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": (
            "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL"
        ),
        "sasl.enabled.mechanisms": "PLAIN",
        "listener.name.sasl_ssl.plain.sasl.jaas.config": jaas,
        "listener.name.sasl_ssl.ssl.keystore.type": "PKCS12",
        "listener.name.sasl_ssl.ssl.keystore.location": str(keystore),
        "listener.name.sasl_ssl.ssl.keystore.password": KEYSTORE_PASSWORD,
        "log.dirs": str(log_dir),
        # One broker: every internal topic has to live with a single replica.
        "offsets.topic.replication.factor": 1,
        "transaction.state.log.replication.factor": 1,
        "transaction.state.log.min.isr": 1,
        "share.coordinator.state.topic.replication.factor": 1,
        "share.coordinator.state.topic.min.isr": 1,
        # The first consumer group creates __consumer_offsets; 50 partitions (the
        # default) take seconds to create on a small machine, 10 are plenty here.
        "offsets.topic.num.partitions": 10,
        # Tests start and stop consumers all the time; don't wait for late joiners.
        "group.initial.rebalance.delay.ms": 0,
        # A broker restarted after a kill (the fault tests) may register again only
        # once its old registration's session has expired: 9 s by default, 3 s here.
        # 6 missed heartbeats still fit in that window on a busy 2-core machine.
        "broker.session.timeout.ms": 3000,
        "broker.heartbeat.interval.ms": 500,
        # Topics are created on purpose (shared.kafka.topics), never by a typo.
        "auto.create.topics.enable": "false",
        "num.partitions": 3,
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def log4j2_properties(log_file: Path) -> str:
    """Everything the broker logs goes to `log_file`, nothing to the terminal."""
    return "\n".join(
        [
            "status = warn",
            "appender.file.type = File",
            "appender.file.name = file",
            f"appender.file.fileName = {log_file}",
            "appender.file.layout.type = PatternLayout",
            "appender.file.layout.pattern = [%d] %p %m (%c)%n",
            "rootLogger.level = INFO",
            "rootLogger.appenderRef.file.ref = file",
            "",
        ]
    )


def new_cluster_id() -> str:
    """A random id as `kafka-storage random-uuid` makes: 16 bytes, unpadded URL-safe base64."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        # Kafka rejects ids starting with '-': they read as command-line options.
        if not cluster_id.startswith("-"):
            return cluster_id
