"""The Kafka clients' TLS files, loaded with OpenSSL when settings are read.

librdkafka opens them only when a client is made: at a function's first publish, so a
CA file with no certificate in it, a key its password does not open, or a key that is
not the certificate's would make every request a 503, with the reason in the log
alone. Python's `ssl` reads the same PEM files with OpenSSL and says what is wrong at
start instead. How strong a key or a signature must be is librdkafka's to judge, with
its own OpenSSL: the files are then given to a client made for the purpose, as a
process would make one.
"""

from __future__ import annotations

import os
import ssl

import confluent_kafka

# OpenSSL's reasons for a key that is not the certificate's: of the same type, or of
# another (an EC key for an RSA certificate).
_NOT_THE_CERTIFICATES_KEY = {"KEY_VALUES_MISMATCH", "NO_CERTIFICATE_ASSIGNED"}
# Its reasons for a key it could not read: not PEM, or not opened by the password.
_UNREADABLE_KEY = {None, "BAD_DECRYPT", "PEM_LIB"}


def check_tls_files(
    *, ca_location: str, certificate_location: str, key_location: str, key_password: str
) -> None:
    """Raise ValueError, naming the setting, unless OpenSSL takes each file that is given."""
    if ca_location:
        _check_certificates(ca_location, "KAFKA_SSL_CA_LOCATION")
    if not certificate_location:
        return
    _check_certificates(certificate_location, "KAFKA_SSL_CERTIFICATE_LOCATION")
    context = _context()
    try:
        # A callable, never None: without a password OpenSSL would ask for one on the
        # terminal, and a server would wait there.
        context.load_cert_chain(
            certificate_location, key_location, password=lambda: key_password.encode()
        )
    except (ssl.SSLError, OSError) as error:
        reason = getattr(error, "reason", None)
        if reason in _NOT_THE_CERTIFICATES_KEY:
            raise ValueError(
                f"KAFKA_SSL_KEY_LOCATION {key_location!r} is not the key of"
                f" KAFKA_SSL_CERTIFICATE_LOCATION's certificate ({certificate_location!r})"
            ) from None
        if reason in _UNREADABLE_KEY:
            raise ValueError(
                f"KAFKA_SSL_KEY_LOCATION {key_location!r} holds no PEM key that"
                f" KAFKA_SSL_KEY_PASSWORD opens ({_reason(error)})"
            ) from None
        raise ValueError(
            f"KAFKA_SSL_CERTIFICATE_LOCATION {certificate_location!r} and its key"
            f" {key_location!r} are refused by OpenSSL ({_reason(error)})"
        ) from None
    _check_with_librdkafka(ca_location, certificate_location, key_location, key_password)


def _check_with_librdkafka(
    ca_location: str, certificate_location: str, key_location: str, key_password: str
) -> None:
    """librdkafka loads the files when a client is made, with its own OpenSSL at its own
    security level, which refuses what the level-0 check above takes (a client key of
    1024 RSA bits: "ee key too small"): every producer, consumer and admin client would
    fail to be made, and a process die with a traceback at its first. A client made
    here, which connects nowhere, says so when the settings are read."""
    config = {
        "security.protocol": "ssl",
        "ssl.certificate.location": certificate_location,
        "ssl.key.location": key_location,
        "log_level": 0,  # it has no broker to name; its warning of that says nothing
    }
    if ca_location:
        config["ssl.ca.location"] = ca_location
    if key_password:
        config["ssl.key.password"] = key_password
    try:
        confluent_kafka.Producer(config)
    except confluent_kafka.KafkaException as error:
        reason = error.args[0].str().split(": ", 1)[-1]
        raise ValueError(
            f"KAFKA_SSL_CERTIFICATE_LOCATION {certificate_location!r} and its key"
            f" {key_location!r} are refused by librdkafka ({reason})"
        ) from None


def _check_certificates(location: str, setting: str) -> None:
    context = _context()
    try:
        if os.path.isdir(location):  # a hashed folder, read certificate by certificate
            context.load_verify_locations(capath=location)
        else:
            context.load_verify_locations(cafile=location)
    except (ssl.SSLError, OSError) as error:
        raise ValueError(
            f"{setting} {location!r} holds no PEM certificate OpenSSL takes ({_reason(error)})"
        ) from None


def _context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # Python's default security level would refuse, say, a certificate signed with SHA-1
    # that librdkafka takes; strength is librdkafka's to judge (see the docstring).
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


def _reason(error: Exception) -> str:
    """OpenSSL's reason, without the source line of Python's `_ssl.c`; never a password."""
    return str(error).split(" (_ssl.c:", 1)[0]
