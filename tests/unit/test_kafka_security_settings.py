"""KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_* and KAFKA_SSL_*: what each client is given, and
the combinations refused because the chosen protocol would ignore a part of them."""

from __future__ import annotations

from contextlib import ExitStack

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from shared.kafka.config import connection_config, consumer_config, producer_config
from shared.runner.embedded import start_backends
from shared.settings import KAFKA_SECURITY_SETTINGS, InvalidSettings, read_settings
from shared.settings_environment import drop_settings_from
from tests.tls_material import TlsFiles, make_tls_files, make_weak_client_identity

SASL = {
    "kafka_security_protocol": "sasl_ssl",
    "kafka_sasl_username": "moderation",
    "kafka_sasl_password": "hunter2-secret",
}
# Loopback, and a port nothing listens on: building a client connects in the background.
NOWHERE = "127.0.0.1:1"


def test_by_default_the_clients_connect_in_plaintext_with_nothing_else_set():
    config = connection_config(read_settings())

    assert config["security.protocol"] == "plaintext"
    assert not [name for name in config if name.startswith(("sasl.", "ssl."))]


def test_sasl_settings_reach_every_client_and_librdkafka_takes_them():
    settings = read_settings(
        kafka_bootstrap_servers=NOWHERE,
        kafka_sasl_mechanism="scram-sha-512",
        **{**SASL, "kafka_security_protocol": "SASL_SSL"},
    )

    config = connection_config(settings)
    # librdkafka refuses a property it does not know when the client is built.
    clients = [
        Producer(producer_config(settings)),
        Consumer(consumer_config(settings)),
        AdminClient(config),
    ]

    assert len(clients) == 3
    assert {name: config[name] for name in config if name.startswith("s")} == {
        "security.protocol": "sasl_ssl",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "moderation",
        "sasl.password": "hunter2-secret",
    }
    assert producer_config(settings)["sasl.password"] == consumer_config(settings)["sasl.password"]


def mutual_tls(files: TlsFiles, **overrides: str) -> dict[str, str]:
    return {
        "kafka_security_protocol": "ssl",
        "kafka_ssl_ca_location": str(files.ca),
        "kafka_ssl_certificate_location": str(files.client.certificate),
        "kafka_ssl_key_location": str(files.client.key),
        "kafka_ssl_key_password": files.client.key_password,
        **overrides,
    }


def test_tls_files_are_given_only_when_set(tmp_path):
    files = make_tls_files(tmp_path)
    settings = read_settings(**mutual_tls(files))

    config = connection_config(settings)

    assert config["security.protocol"] == "ssl"
    assert config["ssl.ca.location"] == str(files.ca)
    assert config["ssl.certificate.location"] == str(files.client.certificate)
    assert config["ssl.key.location"] == str(files.client.key)
    assert config["ssl.key.password"] == files.client.key_password
    # librdkafka opens them when a client is made: the constructor raises on a file it
    # cannot use.
    Producer(producer_config(read_settings(**mutual_tls(files), kafka_bootstrap_servers=NOWHERE)))
    assert "sasl.username" not in config
    assert "ssl.ca.location" not in connection_config(read_settings(kafka_security_protocol="ssl"))


@pytest.mark.parametrize(
    ("overrides", "refusal"),
    [
        ({"kafka_security_protocol": "tls"}, "KAFKA_SECURITY_PROTOCOL: .*expected one of"),
        ({**SASL, "kafka_sasl_mechanism": "GSSAPI"}, "KAFKA_SASL_MECHANISM: .*expected one of"),
        (
            {"kafka_security_protocol": "sasl_plaintext", "kafka_sasl_username": "u"},
            "sasl_plaintext needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD",
        ),
        (
            {"kafka_sasl_username": "u", "kafka_sasl_password": "p"},
            "used only with KAFKA_SECURITY_PROTOCOL sasl_ssl or sasl_plaintext, not plaintext",
        ),
        (
            {
                "kafka_security_protocol": "sasl_plaintext",
                "kafka_ssl_key_password": "k",
                **{
                    name: value for name, value in SASL.items() if name != "kafka_security_protocol"
                },
            },
            "KAFKA_SSL_KEY_PASSWORD used only with KAFKA_SECURITY_PROTOCOL ssl or sasl_ssl",
        ),
        ({"kafka_security_protocol": "ssl", "kafka_ssl_key_password": "k"}, "is for KAFKA_SSL_KEY"),
        (
            {**SASL, "kafka_bootstrap_servers": "plaintext://a:9092,SASL_SSL://b:9092"},
            "names plaintext://a:9092 with plaintext://, but KAFKA_SECURITY_PROTOCOL is sasl_ssl",
        ),
    ],
)
def test_a_combination_the_protocol_would_partly_ignore_is_refused(overrides, refusal):
    with pytest.raises(InvalidSettings, match=refusal):
        read_settings(**overrides)


def test_a_tls_file_this_process_cannot_read_is_refused_when_the_settings_are(tmp_path):
    missing = tmp_path / "ca.pem"
    with pytest.raises(InvalidSettings, match=f"KAFKA_SSL_CA_LOCATION: .*{missing}"):
        read_settings(kafka_security_protocol="ssl", kafka_ssl_ca_location=str(missing))


@pytest.mark.parametrize(
    ("spoil", "refusal"),
    [
        ({"kafka_ssl_ca_location": "client.key"}, "KAFKA_SSL_CA_LOCATION .* holds no PEM cert"),
        (
            {"kafka_ssl_certificate_location": "client.key"},
            "KAFKA_SSL_CERTIFICATE_LOCATION .* holds no PEM certificate",
        ),
        ({"kafka_ssl_key_password": "not-the-key-password"}, "no PEM key that .* opens"),
        # An encrypted key and no password: OpenSSL must not ask for one on a terminal.
        ({"kafka_ssl_key_password": ""}, "no PEM key that KAFKA_SSL_KEY_PASSWORD opens"),
        ({"kafka_ssl_key_location": "ca.pem"}, "no PEM key that KAFKA_SSL_KEY_PASSWORD opens"),
        ({"kafka_ssl_key_location": "other/client.key"}, "is not the key of .* certificate"),
        # OpenSSL gives another reason for a key of another type than the certificate's.
        ({"kafka_ssl_key_location": "rsa.key"}, "is not the key of .* certificate"),
        ({"kafka_ssl_certificate_location": "ca.pem"}, "is not the key of .* certificate"),
    ],
    ids=[
        "ca not a certificate",
        "certificate not a certificate",
        "wrong key password",
        "no key password",
        "key not a key",
        "another key",
        "a key of another type",
        "another certificate",
    ],
)
def test_tls_files_openssl_would_not_take_are_refused_when_the_settings_are(
    tmp_path, spoil, refusal
):
    files = make_tls_files(tmp_path)
    (tmp_path / "other").mkdir()
    make_tls_files(tmp_path / "other")
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "rsa.key").write_bytes(
        rsa_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    spoilt = {
        name: str(tmp_path / value) if name.endswith("location") else value
        for name, value in spoil.items()
    }

    with pytest.raises(InvalidSettings, match=refusal) as refused:
        read_settings(**mutual_tls(files, **spoilt))

    assert files.client.key_password not in str(refused.value)
    assert "not-the-key-password" not in str(refused.value)


def test_a_client_key_librdkafka_finds_too_weak_is_refused_when_the_settings_are(tmp_path):
    # Python's check takes it (security level 0); librdkafka refuses it when it makes a
    # client, so every client of the process would fail to be made.
    files = make_tls_files(tmp_path)
    certificate, key = make_weak_client_identity(tmp_path)
    weak = {
        "kafka_ssl_certificate_location": str(certificate),
        "kafka_ssl_key_location": str(key),
        "kafka_ssl_key_password": "",
    }

    with pytest.raises(InvalidSettings, match=r"refused by librdkafka .*key too small"):
        read_settings(**mutual_tls(files, **weak))


def test_a_folder_of_ca_certificates_is_taken_as_librdkafka_takes_it(tmp_path):
    # ssl.ca.location may name a hashed folder (what /etc/ssl/certs is): read as one
    # file, it would be refused at start, though librdkafka would have used it.
    folder = tmp_path / "certs"
    folder.mkdir()
    make_tls_files(folder)

    settings = read_settings(kafka_security_protocol="ssl", kafka_ssl_ca_location=str(folder))

    assert connection_config(settings)["ssl.ca.location"] == str(folder)


def test_a_client_certificate_needs_its_key(tmp_path):
    (tmp_path / "client.pem").write_text("")
    with pytest.raises(InvalidSettings, match="needs both KAFKA_SSL_CERTIFICATE_LOCATION and"):
        read_settings(
            kafka_security_protocol="ssl",
            kafka_ssl_certificate_location=str(tmp_path / "client.pem"),
        )


def test_a_bootstrap_prefix_that_agrees_with_the_protocol_is_taken():
    settings = read_settings(**SASL, kafka_bootstrap_servers="SASL_SSL://a:9094,b:9094")

    assert settings.kafka_bootstrap_servers == "SASL_SSL://a:9094,b:9094"


def test_the_passwords_are_never_shown():
    settings = read_settings(**SASL)
    with pytest.raises(InvalidSettings) as refused:
        read_settings(**SASL, kafka_sasl_mechanism="nope", db_pool_max_size=-1)

    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(refused.value)


def test_the_local_runners_in_memory_kafka_is_reached_in_plaintext_whatever_is_set(tmp_path):
    settings = read_settings(**SASL)
    with ExitStack() as stack:
        backends = start_backends(
            settings, {"DATABASE_URL": "postgresql://unused"}, stack, tmp_path
        )
        config = connection_config(backends.settings)

    assert backends.in_memory_kafka
    assert config["security.protocol"] == "plaintext"
    assert not [name for name in config if name.startswith(("sasl.", "ssl."))]


def test_a_sasl_mechanism_given_for_a_protocol_without_sasl_is_refused_unless_the_default():
    with pytest.raises(InvalidSettings, match="KAFKA_SASL_MECHANISM used only with"):
        read_settings(kafka_sasl_mechanism="SCRAM-SHA-512")

    # Every setting listed with its default, as a process started with them all is.
    every_default = read_settings(**read_settings().model_dump())
    assert every_default.kafka_sasl_mechanism == "PLAIN"


def test_settings_for_a_plaintext_broker_drop_the_account_and_the_tls_files(tmp_path):
    files = make_tls_files(tmp_path)
    secured = read_settings(
        **SASL, kafka_sasl_mechanism="SCRAM-SHA-256", kafka_ssl_ca_location=str(files.ca)
    )

    plain = secured.for_plaintext_kafka("127.0.0.1:9092")

    assert connection_config(plain) == {
        **connection_config(read_settings()),
        "bootstrap.servers": "127.0.0.1:9092",
        "logger": connection_config(plain)["logger"],
    }
    assert plain.kafka_sasl_mechanism == "PLAIN"


def test_a_process_starting_its_own_broker_drops_the_shells_security_variables_in_any_case():
    environ = {
        "KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
        "kafka_sasl_password": "hunter2-secret",
        "Kafka_Ssl_Ca_Location": "/etc/ca.pem",
        "KAFKA_BOOTSTRAP_SERVERS": "broker:9092",
        "PATH": "/usr/bin",
    }

    drop_settings_from(environ, KAFKA_SECURITY_SETTINGS)

    assert environ == {"KAFKA_BOOTSTRAP_SERVERS": "broker:9092", "PATH": "/usr/bin"}
