"""The Kafka security settings checked together: a setting the chosen protocol would
ignore is refused, since it reads as in force, and so is a bootstrap prefix that
disagrees with the protocol (Settings' validator calls these)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.kafka.tls_files import check_tls_files

if TYPE_CHECKING:
    from shared.settings import Settings


def check_kafka_security(settings: Settings) -> None:
    """ValueError for a setting the chosen protocol would ignore: it reads as in force."""
    _sasl_account_consistent(settings)
    _tls_files_consistent(settings)
    _bootstrap_prefixes_agree(settings)
    check_tls_files(
        ca_location=settings.kafka_ssl_ca_location,
        certificate_location=settings.kafka_ssl_certificate_location,
        key_location=settings.kafka_ssl_key_location,
        key_password=settings.kafka_ssl_key_password,
    )


def _sasl_account_consistent(settings: Settings) -> None:
    protocol = settings.kafka_security_protocol
    sasl = protocol.startswith("sasl_")
    if sasl and not (settings.kafka_sasl_username and settings.kafka_sasl_password):
        raise ValueError(
            f"KAFKA_SECURITY_PROTOCOL {protocol} needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
        )
    account = [
        name.upper()
        for name in ("kafka_sasl_username", "kafka_sasl_password")
        if getattr(settings, name)
    ]
    # The mechanism's default passes: a deployment that lists every setting with its
    # default gives it whatever the protocol.
    if settings.kafka_sasl_mechanism != type(settings).model_fields["kafka_sasl_mechanism"].default:
        account.insert(0, "KAFKA_SASL_MECHANISM")
    if not sasl and account:
        raise ValueError(
            f"{', '.join(account)} used only with KAFKA_SECURITY_PROTOCOL sasl_ssl or"
            f" sasl_plaintext, not {protocol}"
        )


def _tls_files_consistent(settings: Settings) -> None:
    protocol = settings.kafka_security_protocol
    tls_files = {
        "KAFKA_SSL_CA_LOCATION": settings.kafka_ssl_ca_location,
        "KAFKA_SSL_CERTIFICATE_LOCATION": settings.kafka_ssl_certificate_location,
        "KAFKA_SSL_KEY_LOCATION": settings.kafka_ssl_key_location,
        "KAFKA_SSL_KEY_PASSWORD": settings.kafka_ssl_key_password,
    }
    given = [name for name, value in tls_files.items() if value]
    if given and not protocol.endswith("ssl"):
        raise ValueError(
            f"{', '.join(given)} used only with KAFKA_SECURITY_PROTOCOL ssl or"
            f" sasl_ssl, not {protocol}"
        )
    if bool(settings.kafka_ssl_certificate_location) != bool(settings.kafka_ssl_key_location):
        raise ValueError(
            "a client certificate needs both KAFKA_SSL_CERTIFICATE_LOCATION and"
            " KAFKA_SSL_KEY_LOCATION"
        )
    if settings.kafka_ssl_key_password and not settings.kafka_ssl_key_location:
        raise ValueError("KAFKA_SSL_KEY_PASSWORD is for KAFKA_SSL_KEY_LOCATION's key")


def _bootstrap_prefixes_agree(settings: Settings) -> None:
    protocol = settings.kafka_security_protocol
    for server in settings.kafka_bootstrap_servers.split(","):
        prefix = server.split("://", 1)[0].lower() if "://" in server else protocol
        if prefix != protocol:
            # librdkafka then connects to no broker at all (tried: every metadata
            # request failed with "Broker transport failure").
            raise ValueError(
                f"KAFKA_BOOTSTRAP_SERVERS names {server} with {prefix}://, but"
                f" KAFKA_SECURITY_PROTOCOL is {protocol}: set the protocol there and"
                " leave the prefix out"
            )
