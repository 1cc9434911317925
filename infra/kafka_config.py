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
    *,
    port: int,
    controller_port: int,
    sasl_port: int,
    ssl_port: int,
    keystore: Path,
    ca_certificate: Path,
    log_dir: Path,
) -> str:
    """One process that is both broker and controller, listening on 127.0.0.1 only: on
    `port` in plaintext without authentication, on `sasl_port` over TLS (the certificate
    in `keystore`) for SASL_USERNAME alone, and on `ssl_port` over mutual TLS for any
    client with a certificate `ca_certificate` signs (infra/kafka_tls.py)."""
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
            f"SASL_SSL://{LOCALHOST}:{sasl_port},SSL://{LOCALHOST}:{ssl_port}"
        ),
        "advertised.listeners": (
            f"PLAINTEXT://{LOCALHOST}:{port},SASL_SSL://{LOCALHOST}:{sasl_port},"
            f"SSL://{LOCALHOST}:{ssl_port}"
        ),
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": (
            "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL"
        ),
        "sasl.enabled.mechanisms": "PLAIN",
        "listener.name.sasl_ssl.plain.sasl.jaas.config": jaas,
        **_tls_listener("sasl_ssl", keystore),
        **_tls_listener("ssl", keystore),
        "listener.name.ssl.ssl.client.auth": "required",
        "listener.name.ssl.ssl.truststore.type": "PEM",
        "listener.name.ssl.ssl.truststore.location": str(ca_certificate),
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


def _tls_listener(name: str, keystore: Path) -> dict[str, str]:
    """The broker's own certificate on listener `name`."""
    return {
        f"listener.name.{name}.ssl.keystore.type": "PKCS12",
        f"listener.name.{name}.ssl.keystore.location": str(keystore),
        f"listener.name.{name}.ssl.keystore.password": KEYSTORE_PASSWORD,
    }


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
