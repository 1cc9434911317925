"""The Kafka clients' TLS files, loaded as librdkafka will load them, when settings are read.

librdkafka opens them only when a client is made: at a function's first publish, so a
CA file with no certificate in it, a key its password does not open, or a key that is
not the certificate's would make every request a 503, with the reason in the log
alone. Python's `ssl` reads the same PEM files with OpenSSL, as librdkafka does, and
says what is wrong at start instead.
"""

from __future__ import annotations

import os
import ssl

_KEY_VALUES_MISMATCH = "KEY_VALUES_MISMATCH"


def check_tls_files(
    *, ca_location: str, certificate_location: str, key_location: str, key_password: str
) -> None:
    """Raise ValueError, naming the setting, unless OpenSSL takes each file that is given."""
    if ca_location:
        _check_certificates(ca_location, "KAFKA_SSL_CA_LOCATION")
    if not certificate_location:
        return
    _check_certificates(certificate_location, "KAFKA_SSL_CERTIFICATE_LOCATION")
    try:
        # A callable, never None: without a password OpenSSL would ask for one on the
        # terminal, and a server would wait there.
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(
            certificate_location, key_location, password=lambda: key_password.encode()
        )
    except (ssl.SSLError, OSError) as error:
        if getattr(error, "reason", None) == _KEY_VALUES_MISMATCH:
            raise ValueError(
                f"KAFKA_SSL_KEY_LOCATION {key_location!r} is not the key of"
                f" KAFKA_SSL_CERTIFICATE_LOCATION's certificate ({certificate_location!r})"
            ) from None
        raise ValueError(
            f"KAFKA_SSL_KEY_LOCATION {key_location!r} holds no PEM key that"
            f" KAFKA_SSL_KEY_PASSWORD opens ({_reason(error)})"
        ) from None


def _check_certificates(location: str, setting: str) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        if os.path.isdir(location):  # a hashed folder, read certificate by certificate
            context.load_verify_locations(capath=location)
        else:
            context.load_verify_locations(cafile=location)
    except (ssl.SSLError, OSError) as error:
        raise ValueError(
            f"{setting} {location!r} holds no PEM certificate OpenSSL takes ({_reason(error)})"
        ) from None


def _reason(error: Exception) -> str:
    """OpenSSL's reason, without the source line of Python's `_ssl.c`; never a password."""
    return str(error).split(" (_ssl.c:", 1)[0]
