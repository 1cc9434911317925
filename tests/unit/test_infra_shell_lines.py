"""`eval "$(make -s infra-up)"` leaves the shell's settings naming that stack alone."""

from __future__ import annotations

import os
import subprocess
import sys

from infra.__main__ import shell_lines
from infra.local_stack import LocalStack
from tests.python_snippets import REPO_ROOT

STACK = LocalStack(
    kafka_bootstrap_servers="127.0.0.1:19092",
    # With its password (secrets.token_urlsafe's alphabet): eval must keep it whole.
    database_url="postgresql://postgres:q-7Xz_Lk9@127.0.0.1:15432/moderation",
)
# What a shell set up for another cluster may hold, in the cases settings also read.
OTHER_CLUSTER = {
    "database_url": "postgresql://app@db.internal:5432/moderation",
    "Kafka_Bootstrap_Servers": "broker.internal:9093",
    "kafka_security_protocol": "sasl_ssl",
    "KAFKA_SASL_USERNAME": "app",
    "kafka_sasl_password": "secret",
    "Kafka_Ssl_Ca_Location": "/etc/ssl/other-ca.pem",
}
PRINT_SETTINGS = (
    "from shared.settings import Settings; s = Settings(); print(s.database_url,"
    " s.kafka_bootstrap_servers, s.kafka_security_protocol, repr(s.kafka_sasl_username),"
    " repr(s.kafka_sasl_password), repr(s.kafka_ssl_ca_location))"
)


def test_the_shell_then_names_the_stack_whatever_case_its_variables_were_in():
    environ = {**os.environ, **OTHER_CLUSTER, "PYTHONPATH": str(REPO_ROOT)}
    lines = "\n".join(shell_lines(STACK, environ))

    shown = subprocess.run(
        ["bash", "-c", f'eval "$LINES"; exec "{sys.executable}" -c "$CODE"'],
        env={**environ, "LINES": lines, "CODE": PRINT_SETTINGS},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert shown.returncode == 0, shown.stderr

    assert shown.stdout.split() == [
        STACK.database_url,
        STACK.kafka_bootstrap_servers,
        "plaintext",
        "''",
        "''",
        "''",
    ]


def test_a_shell_without_other_spellings_gets_the_plain_lines():
    assert shell_lines(STACK, {"PATH": "/bin"}) == [
        f"export KAFKA_BOOTSTRAP_SERVERS={STACK.kafka_bootstrap_servers}",
        f"export DATABASE_URL={STACK.database_url}",
        "export KAFKA_SECURITY_PROTOCOL=plaintext",
        "unset KAFKA_SASL_MECHANISM KAFKA_SASL_PASSWORD KAFKA_SASL_USERNAME"
        " KAFKA_SSL_CA_LOCATION KAFKA_SSL_CERTIFICATE_LOCATION KAFKA_SSL_KEY_LOCATION"
        " KAFKA_SSL_KEY_PASSWORD",
    ]
