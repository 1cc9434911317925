"""Kafka over SASL and TLS: every client of ours (admin, producer, consumer) connects with
KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_* and KAFKA_SSL_*, against the test broker's
SASL_SSL listener, which takes one account (infra/kafka_config.py), and its SSL
listener, which takes a client certificate its CA signs; both show a certificate of
that CA (infra/kafka_tls.py)."""

from __future__ import annotations

import logging

import pytest
from functions_framework import create_app

from infra.kafka_config import SASL_PASSWORD, SASL_USERNAME
from shared.errors import BrokerUnavailable
from shared.kafka.topics import ensure_topics
from shared.settings import Settings
from tests.integration.database_rows import seed_ads, task_rows
from tests.integration.wiring import running_consumer, wired_services
from tests.must_run import skip_or_fail
from tests.waiting import wait_until


@pytest.fixture
def sasl_settings(infra, settings) -> Settings:
    if infra.kafka is None or infra.kafka.sasl_port is None:
        skip_or_fail("an external broker: which SASL listener it has, if any, is not known")
    return Settings(
        **{
            **settings.model_dump(),
            "kafka_bootstrap_servers": infra.kafka.sasl_bootstrap_servers,
            "kafka_security_protocol": "SASL_SSL",
            "kafka_sasl_mechanism": "plain",
            "kafka_sasl_username": SASL_USERNAME,
            "kafka_sasl_password": SASL_PASSWORD,
            "kafka_ssl_ca_location": str(infra.kafka.ca_location),
        }
    )


@pytest.fixture
def mutual_tls_settings(infra, settings) -> Settings:
    if infra.kafka is None or infra.kafka.ssl_port is None:
        skip_or_fail("an external broker: which SSL listener it has, if any, is not known")
    client = infra.kafka.client_identity
    return Settings(
        **{
            **settings.model_dump(),
            "kafka_bootstrap_servers": infra.kafka.ssl_bootstrap_servers,
            "kafka_security_protocol": "ssl",
            "kafka_ssl_ca_location": str(infra.kafka.ca_location),
            "kafka_ssl_certificate_location": str(client.certificate),
            "kafka_ssl_key_location": str(client.key),
            "kafka_ssl_key_password": client.key_password,
        }
    )


@pytest.mark.parametrize(
    "secured", ["sasl_settings", "mutual_tls_settings"], ids=["sasl over tls", "mutual tls"]
)
def test_a_task_goes_from_async_predict_to_its_verdict_over_a_secured_listener(secured, request):
    secured_settings = request.getfixturevalue(secured)
    ensure_topics(secured_settings)  # the admin client finds the test's topics
    with wired_services(secured_settings) as services:
        services.publisher.ping()
        (item_id,) = seed_ads(services, 1)
        app = create_app("async_predict", "functions/async_predict/main.py")
        accepted = app.test_client().post(f"/async_predict?item_id={item_id}")
        assert accepted.status_code == 202, accepted.get_data(as_text=True)

        with running_consumer(services):
            wait_until(
                lambda: [row[2] for row in task_rows(services)] == ["completed"],
                timeout_s=30,
                what=f"the task completed by a consumer connected with {secured}",
            )

        # Published at once, not by the relay after a failed try.
        with services.db.autocommit() as session:
            tries = session.conn.execute("SELECT publish_tries FROM moderation_results").fetchall()
        assert tries == [(0,)]


@pytest.mark.parametrize(
    ("secured", "change", "logged"),
    [
        ("sasl_settings", {"kafka_sasl_password": "not-the-password"}, "Authentication failed"),
        # Without KAFKA_SSL_CA_LOCATION the system's store is used, which knows no test CA.
        ("sasl_settings", {"kafka_ssl_ca_location": ""}, "certificate verify failed"),
        # The broker ends the handshake of a client that shows no certificate.
        (
            "mutual_tls_settings",
            {
                "kafka_ssl_certificate_location": "",
                "kafka_ssl_key_location": "",
                "kafka_ssl_key_password": "",
            },
            "bad certificate",
        ),
    ],
    ids=["wrong password", "untrusted certificate", "no client certificate"],
)
def test_a_refused_connection_makes_kafka_unavailable_and_the_log_says_why(
    secured, change, logged, caplog, request
):
    secured_settings = request.getfixturevalue(secured)
    refused = Settings(**{**secured_settings.model_dump(), **change})
    with (
        caplog.at_level(logging.INFO, logger="librdkafka"),
        wired_services(refused) as services,
        pytest.raises(BrokerUnavailable),
    ):
        services.publisher.ping(timeout_s=3)

    said = " ".join(record.getMessage() for record in caplog.records if record.name == "librdkafka")
    assert logged in said, said
