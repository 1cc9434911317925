"""The test broker's TLS identities, made once per broker folder.

The broker's: a self-signed certificate for 127.0.0.1, made with the JDK's keytool (Java
is there already, for the broker itself). The broker serves it from a PKCS12 keystore;
clients trust it through `ca.pem`, its certificate alone, as KAFKA_SSL_CA_LOCATION names
a private CA's file.

A client's: a key and a certificate that CA signs, as PEM files with the key encrypted,
the form KAFKA_SSL_CERTIFICATE_LOCATION, KAFKA_SSL_KEY_LOCATION and
KAFKA_SSL_KEY_PASSWORD take (managed Kafka with mutual TLS hands out the same). keytool
cannot write a private key out, so `cryptography` makes this one.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from infra import _process
from infra._process import LOCALHOST

# Only ever on loopback, in a folder of the test or development broker's own.
KEYSTORE_PASSWORD = "moderation-keystore"
CLIENT_KEY_PASSWORD = "moderation-client-key"
CLIENT_NAME = "moderation-client"
KEYTOOL_TIMEOUT_S = 60.0
# Long enough for any `make infra-up` broker: the certificate is made once per broker
# folder and never renewed (delete the folder's tls/ to have a new one made).
VALIDITY_DAYS = 3650


def ensure_tls_identity(tls_dir: Path, java: str) -> tuple[Path, Path]:
    """(keystore, ca.pem) in `tls_dir`, made now unless both are there."""
    keystore, certificate = tls_dir / "broker.p12", tls_dir / "ca.pem"
    # The keystore holds the CA's private key and client.key the client's: only their
    # owner may read the folder (one made before this rule too), whatever the umask made
    # of the files.
    tls_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    tls_dir.chmod(0o700)
    if keystore.exists() and certificate.exists():
        return keystore, certificate
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


@dataclass(frozen=True)
class ClientIdentity:
    certificate: Path
    key: Path  # encrypted with CLIENT_KEY_PASSWORD

    @property
    def key_password(self) -> str:
        return CLIENT_KEY_PASSWORD


def client_identity_in(tls_dir: Path) -> ClientIdentity:
    return ClientIdentity(certificate=tls_dir / "client.pem", key=tls_dir / "client.key")


def ensure_client_identity(tls_dir: Path, keystore: Path) -> ClientIdentity:
    """CLIENT_NAME's certificate, signed by the broker's CA in `keystore`, and its key:
    made now unless both are there and that CA signed the certificate."""
    identity = client_identity_in(tls_dir)
    ca_key, ca_certificate, _ = pkcs12.load_key_and_certificates(
        keystore.read_bytes(), KEYSTORE_PASSWORD.encode()
    )
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey) or ca_certificate is None:
        raise RuntimeError(f"{keystore} holds no EC key and certificate to sign with")
    if not _signed_by(identity, ca_certificate):
        write_client_identity(identity, ca_key, ca_certificate)
    return identity


def _signed_by(identity: ClientIdentity, ca_certificate: x509.Certificate) -> bool:
    """Whether both files are there and the certificate is this CA's: one from an earlier
    CA (its keystore made again) would be refused by the broker."""
    if not (identity.certificate.exists() and identity.key.exists()):
        return False
    certificate = x509.load_pem_x509_certificate(identity.certificate.read_bytes())
    try:
        certificate.verify_directly_issued_by(ca_certificate)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def write_client_identity(
    identity: ClientIdentity, ca_key: ec.EllipticCurvePrivateKey, ca_certificate: x509.Certificate
) -> None:
    """A new key for CLIENT_NAME and its certificate, which `ca_key` signs."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CLIENT_NAME)]))
        .issuer_name(ca_certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALIDITY_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_whole(
        identity.key,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(CLIENT_KEY_PASSWORD.encode()),
        ),
    )
    # Last: its presence says the key is there too.
    _write_whole(identity.certificate, certificate.public_bytes(serialization.Encoding.PEM))


def _write_whole(path: Path, data: bytes) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    partial.replace(path)
