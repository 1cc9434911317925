"""The test broker's TLS identity: a self-signed certificate for 127.0.0.1, made once per
broker folder with the JDK's keytool (Java is there already, for the broker itself).

The broker serves it from a PKCS12 keystore; clients trust it through `ca.pem`, its
certificate alone, as KAFKA_SSL_CA_LOCATION names a private CA's file."""

from __future__ import annotations

from pathlib import Path

from infra import _process
from infra._process import LOCALHOST

# Only ever on loopback, in a folder of the test or development broker's own.
KEYSTORE_PASSWORD = "moderation-keystore"
KEYTOOL_TIMEOUT_S = 60.0
# Long enough for any `make infra-up` broker: the certificate is made once per broker
# folder and never renewed (delete the folder's tls/ to have a new one made).
VALIDITY_DAYS = 3650


def ensure_tls_identity(tls_dir: Path, java: str) -> tuple[Path, Path]:
    """(keystore, ca.pem) in `tls_dir`, made now unless both are there."""
    keystore, certificate = tls_dir / "broker.p12", tls_dir / "ca.pem"
    if keystore.exists() and certificate.exists():
        return keystore, certificate
    tls_dir.mkdir(parents=True, exist_ok=True)
    keystore.unlink(missing_ok=True)
    keytool = str(Path(java).resolve().parent / "keytool")
    store = ["-keystore", str(keystore), "-storetype", "PKCS12", "-storepass", KEYSTORE_PASSWORD]
    _process.run_to_completion(
        [
            keytool,
            "-genkeypair",
            "-alias",
            "broker",
            "-keyalg",
            "EC",
            "-groupname",
            "secp256r1",
            "-dname",
            "CN=localhost",
            # librdkafka checks the broker's name against the certificate by default.
            "-ext",
            f"SAN=ip:{LOCALHOST},dns:localhost",
            # Its own CA: the clients' trust store holds it and nothing else.
            "-ext",
            "BC:c=ca:true",
            "-validity",
            str(VALIDITY_DAYS),
            *store,
        ],
        what="keytool -genkeypair",
        timeout_s=KEYTOOL_TIMEOUT_S,
        cwd=tls_dir,
    )
    # Written whole or not at all: its presence says the keystore is complete.
    partial = certificate.with_suffix(".pem.partial")
    _process.run_to_completion(
        [keytool, "-exportcert", "-rfc", "-alias", "broker", "-file", str(partial), *store],
        what="keytool -exportcert",
        timeout_s=KEYTOOL_TIMEOUT_S,
        cwd=tls_dir,
    )
    partial.replace(certificate)
    return keystore, certificate
