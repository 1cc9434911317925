"""The test broker's TLS files: a client certificate always of the broker's current CA."""

from __future__ import annotations

import stat

from cryptography import x509

from infra.kafka_jars import require_tool
from infra.kafka_tls import ensure_client_identity, ensure_tls_identity


def _issued_by_the_ca(tls_dir):
    certificate = x509.load_pem_x509_certificate((tls_dir / "client.pem").read_bytes())
    ca = x509.load_pem_x509_certificate((tls_dir / "ca.pem").read_bytes())
    certificate.verify_directly_issued_by(ca)  # raises otherwise
    return certificate.serial_number


def test_a_client_certificate_is_kept_while_its_ca_is_and_made_again_with_a_new_one(tmp_path):
    java = require_tool("java", "for keytool, which makes the broker's certificate")
    keystore, _ = ensure_tls_identity(tmp_path, java)
    ensure_client_identity(tmp_path, keystore)
    first = _issued_by_the_ca(tmp_path)

    ensure_client_identity(tmp_path, keystore)
    kept = _issued_by_the_ca(tmp_path)
    # A keystore made again (its CA file lost, say) is a new CA.
    (tmp_path / "ca.pem").unlink()
    keystore, _ = ensure_tls_identity(tmp_path, java)
    ensure_client_identity(tmp_path, keystore)
    remade = _issued_by_the_ca(tmp_path)

    assert kept == first
    assert remade != first


def test_the_private_keys_are_in_a_folder_only_its_owner_may_read(tmp_path):
    java = require_tool("java", "for keytool, which makes the broker's certificate")
    tls_dir = tmp_path / "tls"
    keystore, _ = ensure_tls_identity(tls_dir, java)
    ensure_client_identity(tls_dir, keystore)
    made = stat.S_IMODE(tls_dir.stat().st_mode)
    tls_dir.chmod(0o755)  # as an earlier version left it

    ensure_tls_identity(tls_dir, java)

    assert made == stat.S_IMODE(tls_dir.stat().st_mode) == 0o700
    assert {"broker.p12", "client.key"} <= {path.name for path in tls_dir.iterdir()}
