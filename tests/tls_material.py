"""PEM files for the Kafka TLS settings' tests: a CA of their own and a client identity it
signs, made in memory in milliseconds (the broker's, in infra/kafka_tls.py, needs keytool)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from infra.kafka_tls import ClientIdentity, client_identity_in, write_client_identity


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    client: ClientIdentity


def make_tls_files(folder: Path) -> TlsFiles:
    """ca.pem, and client.pem with client.key (encrypted) that it signs, in `folder`."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-ca")])
    now = datetime.datetime.now(datetime.UTC)
    ca_certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    ca = folder / "ca.pem"
    ca.write_bytes(ca_certificate.public_bytes(serialization.Encoding.PEM))
    client = client_identity_in(folder)
    write_client_identity(client, ca_key, ca_certificate)
    return TlsFiles(ca=ca, client=client)


def make_weak_client_identity(folder: Path) -> tuple[Path, Path]:
    """weak.pem and weak.key in `folder`: a self-signed certificate of a 1024-bit RSA key,
    which Python's OpenSSL takes at security level 0 and librdkafka's refuses."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "weak")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    certificate_path, key_path = folder / "weak.pem", folder / "weak.key"
    certificate_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return certificate_path, key_path
