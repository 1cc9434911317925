"""The one settings object of the service, read from environment variables.

Every field's env var is its name in upper case; the README lists them all with
their defaults. Nothing reads settings at import time: call `get_settings()`.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict
from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.invalid_settings import InvalidSettings, describe_invalid
from shared.kafka.names import TOPIC_NAME_PATTERN
from shared.kafka.security_settings import check_kafka_security
from shared.settings_environment import misspelt_names

log = logging.getLogger(__name__)

# How much longer than librdkafka's message timeout a publish waits for the delivery
# reports, so that each record's fate (acknowledged or timed out) is known on return.
DELIVERY_REPORT_GRACE_S = 1.0
# The longest a publish waits for room in the producer's local queue before it gives the
# records up (they stay in the outbox). The queue fills only when the broker has stopped
# taking records, so waiting longer would mostly hold the relay's row locks longer.
QUEUE_FULL_WAIT_S = 0.5
# The producer's linger.ms (shared/kafka/config.py). librdkafka refuses to build a
# producer whose message.timeout.ms is not above it.
PRODUCER_LINGER_MS = 2


# The longest any duration setting may be. Far past any sensible value, and within what
# each consumer of one takes: librdkafka's and PostgreSQL's millisecond settings are
# 32-bit (24.8 days), PostgreSQL's make_interval overflows near 1e15 s, and Python's
# waits raise OverflowError past ~9e9 s. A larger value is refused by its name, instead
# of being accepted and failing every publish, claim or wait later.
MAX_DURATION_S = 86_400
# Attempts beyond this would make the last retry wait, base * 2**(n-2), overflow too.
MAX_RETRY_ATTEMPTS = 10
# An idempotency key's lifetime goes only into PostgreSQL's make_interval, so it may be
# longer than other durations: up to 30 days, twice the longest lifetime clients are
# commonly promised.
MAX_IDEMPOTENCY_KEY_TTL_S = 30 * 86_400


# The poll loop notices a stop between polls, and a stop has 4.5 s in all
# (shared/runner/shutdown.py): an idle poll may take under half of that.
MAX_POLL_TIMEOUT_S = 2.0


# Legal names (`TOPIC_NAME_PATTERN`) Kafka still refuses. Nor may '.' and '_' alone tell
# two topics apart (`_kafka_collision_name`): Kafka refuses the second, as its metrics
# would collide.
_TOPIC_NAMES_KAFKA_REFUSES = {".", ".."}
# librdkafka's consume() takes at most this many records at once.
MAX_CONSUMER_BATCH_SIZE = 1_000_000
# Kafka keeps partition counts in 32 bits and replication factors in 16.
MAX_PARTITIONS = 2**31 - 1
MAX_REPLICATION_FACTOR = 2**15 - 1
# A bootstrap server as librdkafka reads one: an optional protocol, a host (an IPv6
# address in brackets) and an optional port.
_BOOTSTRAP_SERVER = re.compile(
    r"(?:(?:plaintext|ssl|sasl_plaintext|sasl_ssl)://)?"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::(?P<port>[0-9]{1,5}))?",
    re.IGNORECASE,
)
# How the Kafka clients authenticate and encrypt: librdkafka's security.protocol values,
# and the SASL mechanisms that take a username and password.
KAFKA_SECURITY_PROTOCOLS = ("plaintext", "ssl", "sasl_plaintext", "sasl_ssl")
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
# What only a secured broker takes: the SASL account and the TLS files.
KAFKA_ACCOUNT_AND_TLS_SETTINGS = (
    "kafka_sasl_mechanism",
    "kafka_sasl_username",
    "kafka_sasl_password",
    "kafka_ssl_ca_location",
    "kafka_ssl_certificate_location",
    "kafka_ssl_key_location",
    "kafka_ssl_key_password",
)
# Every setting of how a Kafka client connects securely.
KAFKA_SECURITY_SETTINGS = ("kafka_security_protocol", *KAFKA_ACCOUNT_AND_TLS_SETTINGS)
_KAFKA_CHOICES = {
    "kafka_security_protocol": KAFKA_SECURITY_PROTOCOLS,
    "kafka_sasl_mechanism": KAFKA_SASL_MECHANISMS,
}


# The project's own model (`make model`), named absolutely: relative to the working
# directory, it was missing (a 503 on every prediction) for a function started elsewhere.
DEFAULT_MODEL_URI = str(Path(__file__).resolve().parents[1] / "var" / "models" / "default")


class Settings(BaseSettings):
    # No inf or NaN: every float here is a duration, and an infinite one either hangs a
    # wait for good or fails later, far from its setting (int(inf) in the pool, say).
    model_config = SettingsConfigDict(
        env_prefix="", case_sensitive=False, extra="ignore", allow_inf_nan=False
    )

    # PostgreSQL
    # Out of repr, as the Kafka passwords: it may hold the database's password.
    database_url: str = Field(default="postgresql://postgres@127.0.0.1:5432/moderation", repr=False)
    db_pool_min_size: int = Field(default=1, ge=0)
    db_pool_max_size: int = Field(default=10, ge=1)
    db_connect_timeout_s: float = Field(default=5.0, gt=0, le=MAX_DURATION_S)
    db_statement_timeout_ms: int = Field(default=5000, ge=0, le=MAX_DURATION_S * 1000)
    db_prepared_statements: bool = True

    # Kafka
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_moderation_topic: str = Field(default="moderation", pattern=TOPIC_NAME_PATTERN)
    kafka_dlq_topic: str = Field(default="moderation_dlq", pattern=TOPIC_NAME_PATTERN)
    kafka_moderation_partitions: int = Field(default=3, ge=1, le=MAX_PARTITIONS)
    kafka_dlq_partitions: int = Field(default=1, ge=1, le=MAX_PARTITIONS)
    kafka_replication_factor: int = Field(default=1, ge=1, le=MAX_REPLICATION_FACTOR)
    # Empty, librdkafka aborts the whole process (an assertion in its consumer).
    kafka_consumer_group: str = Field(default="moderation-consumer", min_length=1, max_length=255)
    # In whole milliseconds above the producer's linger (see `publish_timeout_ms`).
    kafka_publish_timeout_s: float = Field(default=2.0, gt=0, le=MAX_DURATION_S)
    # What every Kafka client (producer, consumer, admin) connects with: a managed
    # Kafka takes SASL over TLS, some TLS client certificates. Empty: not used; the CA
    # file's default is the system's store, as librdkafka finds it.
    kafka_security_protocol: str = "plaintext"
    kafka_sasl_mechanism: str = "PLAIN"
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = Field(default="", repr=False)
    kafka_ssl_ca_location: str = ""
    kafka_ssl_certificate_location: str = ""
    kafka_ssl_key_location: str = ""
    kafka_ssl_key_password: str = Field(default="", repr=False)

    # Consumer
    consumer_batch_size: int = Field(default=500, ge=1, le=MAX_CONSUMER_BATCH_SIZE)
    consumer_poll_timeout_s: float = Field(default=1.0, gt=0, le=MAX_POLL_TIMEOUT_S)

    # Retries of temporary errors: attempt n waits retry_base_delay_s * 2**(n-1).
    retry_base_delay_s: float = Field(default=5.0, ge=0, le=MAX_DURATION_S)
    retry_max_attempts: int = Field(default=4, ge=1, le=MAX_RETRY_ATTEMPTS)

    # Outbox relay: republishes tasks whose immediate publish did not get through.
    outbox_relay_interval_s: float = Field(default=1.0, gt=0, le=MAX_DURATION_S)
    outbox_grace_s: float = Field(default=5.0, ge=0, le=MAX_DURATION_S)
    # Past a bigint, every claim's LIMIT would fail; past this, a claim's 16 MiB cap ends
    # it long before anyway.
    outbox_batch_size: int = Field(default=500, ge=1, le=MAX_CONSUMER_BATCH_SIZE)
    # How long one call of the `outbox_relay` function may go on sweeping a backlog: under
    # the shortest request timeout common platforms give a function (60 s).
    outbox_relay_call_budget_s: float = Field(default=30.0, gt=0, le=MAX_DURATION_S)

    # How long an Idempotency-Key names its task, written into the key's row when the key
    # is; after it, the key may name a new task, and the relay deletes it.
    idempotency_key_ttl_s: float = Field(default=86_400, gt=0, le=MAX_IDEMPOTENCY_KEY_TTL_S)

    # Model
    model_uri: str = DEFAULT_MODEL_URI

    # HTTP
    api_keys: str = Field(default="", repr=False)
    # Room for the largest ad PredictRequest accepts in any JSON encoding: 21,000
    # characters of name and description, each up to 12 bytes as an escaped surrogate pair.
    max_body_bytes: int = Field(default=256 * 1024, ge=1)
    retry_after_s: int = Field(default=5, ge=1, le=MAX_DURATION_S)

    # Process
    log_level: str = "INFO"
    port: int = Field(default=8000, ge=1, le=65535)
    # Where the consumer's and relay's /healthz, /readyz and /metrics listen; all
    # interfaces by default, so a container's health check and a scraper reach them.
    ops_host: str = "0.0.0.0"

    @field_validator("log_level")
    @classmethod
    def _known_log_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError(f"expected DEBUG, INFO, WARNING, ERROR or CRITICAL, got {value!r}")
        return level

    @field_validator("kafka_moderation_topic", "kafka_dlq_topic")
    @classmethod
    def _not_dot_or_dot_dot(cls, value: str) -> str:
        if value in _TOPIC_NAMES_KAFKA_REFUSES:
            raise ValueError(f"Kafka refuses a topic named {value!r}")
        return value

    @field_validator("kafka_security_protocol", "kafka_sasl_mechanism")
    @classmethod
    def _a_name_librdkafka_takes(cls, value: str, info: ValidationInfo) -> str:
        known = _KAFKA_CHOICES[info.field_name or ""]
        # In any case, spelt as librdkafka's documentation does.
        canonical = {name.casefold(): name for name in known}.get(value.strip().casefold())
        if canonical is None:
            raise ValueError(f"expected one of {', '.join(known)}, got {value!r}")
        return canonical

    @field_validator(
        "kafka_ssl_ca_location", "kafka_ssl_certificate_location", "kafka_ssl_key_location"
    )
    @classmethod
    def _a_readable_file(cls, value: str) -> str:
        # librdkafka would refuse it only when a client is made: at the first publish,
        # every request then a 503 for a reason found in the log alone.
        if value and not os.access(value, os.R_OK):
            raise ValueError(f"no file this process can read at {value!r}")
        return value

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _bootstrap_servers(cls, value: str) -> str:
        # librdkafka skips empty entries (a trailing comma, say), and so do we.
        servers = [server.strip() for server in value.split(",") if server.strip()]
        if not servers:
            raise ValueError("expected host:port[,host:port...], got nothing")
        for server in servers:
            match = _BOOTSTRAP_SERVER.fullmatch(server)
            port = match and match["port"]
            if match is None or (port is not None and not _a_tcp_port(port)):
                # librdkafka takes a port past 65535 modulo 2**16, and connects elsewhere.
                raise ValueError(
                    f"expected host:port[,host:port...] with ports 1-65535, got {server!r}"
                )
        return ",".join(servers)

    @field_validator("database_url")
    @classmethod
    def _a_connection_string(cls, value: str) -> str:
        try:
            params = conninfo_to_dict(value)
        except (psycopg.ProgrammingError, UnicodeDecodeError) as error:
            # libpq quotes the part it cannot read, which may be the password (quotes
            # and all): only its words before the first quote are kept, and a byte that
            # is not UTF-8 is not shown at all.
            reason = "not UTF-8" if isinstance(error, UnicodeDecodeError) else str(error)
            reason = re.split(r'["«»„“”]', reason, maxsplit=1)[0].strip().rstrip(":")
            raise ValueError(
                f"not a connection string libpq can read ({reason}): expected"
                " postgresql://user@host:port/database or key=value pairs"
            ) from None
        # libpq reads a port only when it connects, and then fails as if the server were
        # down: a 503 and "PostgreSQL unavailable" for what is a typo. Neither the port
        # nor the host is quoted: in a URL whose password holds a `/` or an `@` that is
        # not percent-encoded, libpq reads a piece of the password as one of them.
        for port in str(params.get("port") or "").split(","):
            if port and not _a_tcp_port(port):
                raise ValueError(f"the port is not a number from 1 to 65535{_ESCAPE_HINT}")
        # A host may open with an @ (an abstract Unix socket, libpq 14 on), not hold one.
        if any("@" in host[1:] for host in str(params.get("host") or "").split(",")):
            raise ValueError(f"the host holds an @{_ESCAPE_HINT}")
        # A password that opens with a `/` (or a port and a `/`) ends the URL's authority
        # early, and the rest, password included, becomes the database name, which error
        # messages show; a name written in the URL has its @ percent-encoded.
        if "@" in _url_path(value):
            raise ValueError(f"the database name holds an @{_ESCAPE_HINT}")
        return value

    @field_validator("api_keys")
    @classmethod
    def _keys_or_nothing(cls, value: str) -> str:
        keys = _keys_in(value)
        if value.strip() and not keys:
            # " , " would otherwise leave the API open while it reads as configured.
            raise ValueError("only separators, no key; leave it empty for none")
        if any(not _PRINTABLE_ASCII.fullmatch(key) for key in keys):
            # A header value reaches the handler decoded as Latin-1 and is compared as
            # UTF-8, so a key beyond ASCII never matches what a client sends for it, and
            # a control character cannot be sent in a header at all: every request
            # would get a 401 while the setting reads as configured.
            raise ValueError("only printable ASCII may be given")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        check_kafka_security(self)
        if _kafka_collision_name(self.kafka_dlq_topic) == _kafka_collision_name(
            self.kafka_moderation_topic
        ):
            # The consumer would read its own dead letters, each a malformed record it
            # dead-letters again, at a new offset: a loop with no end.
            raise ValueError(
                f"KAFKA_DLQ_TOPIC ({self.kafka_dlq_topic}) must be another topic than"
                f" KAFKA_MODERATION_TOPIC ({self.kafka_moderation_topic})"
            )
        if self.db_pool_min_size > self.db_pool_max_size:
            raise ValueError(
                f"DB_POOL_MIN_SIZE ({self.db_pool_min_size}) is over DB_POOL_MAX_SIZE"
                f" ({self.db_pool_max_size})"
            )
        if self.publish_timeout_ms <= PRODUCER_LINGER_MS:
            # Accepted, it would fail every publish and every relay sweep, and an accepted
            # task would never reach Kafka.
            raise ValueError(
                f"KAFKA_PUBLISH_TIMEOUT_S ({self.kafka_publish_timeout_s:g}) must be over the"
                f" producer's linger of {PRODUCER_LINGER_MS} ms: at least"
                f" {(PRODUCER_LINGER_MS + 1) / 1000:g}"
            )
        statement_timeout_s = self.db_statement_timeout_ms / 1000
        if statement_timeout_s and self.publish_wait_s >= statement_timeout_s:
            # The relay holds its claimed rows' locks while it publishes them; a consumer
            # UPDATE waiting on such a lock must not time out first, or a healthy batch
            # counts a failed attempt for every sweep of a slow broker.
            raise ValueError(
                f"KAFKA_PUBLISH_TIMEOUT_S + up to {QUEUE_FULL_WAIT_S:g} s for a full local"
                f" queue + {DELIVERY_REPORT_GRACE_S:g} s ({self.publish_wait_s:g} s) must"
                " stay below DB_STATEMENT_TIMEOUT_MS"
                f" ({self.db_statement_timeout_ms} ms)"
            )
        return self

    def for_plaintext_kafka(self, bootstrap_servers: str) -> Settings:
        """These settings for a broker reached in plaintext, without an account: the local
        runner's in-memory Kafka, `make infra-up`'s broker. What the environment says of
        another broker's security does not apply to it."""
        defaults = {
            name: Settings.model_fields[name].default for name in KAFKA_ACCOUNT_AND_TLS_SETTINGS
        }
        return self.model_copy(
            update={
                "kafka_bootstrap_servers": bootstrap_servers,
                "kafka_security_protocol": "plaintext",
                **defaults,
            }
        )

    @property
    def publish_timeout_ms(self) -> int:
        """librdkafka's message.timeout.ms, in whole milliseconds as it takes them."""
        return int(self.kafka_publish_timeout_s * 1000)

    @property
    def queue_full_wait_s(self) -> float:
        """The longest a publish waits for room in the producer's local queue."""
        return min(self.kafka_publish_timeout_s, QUEUE_FULL_WAIT_S)

    @property
    def publish_wait_s(self) -> float:
        """The longest a publish takes: room in the local queue, then the acknowledgements."""
        return self.queue_full_wait_s + self.kafka_publish_timeout_s + DELIVERY_REPORT_GRACE_S

    @property
    def api_key_list(self) -> list[str]:
        return _keys_in(self.api_keys)

    def retry_delays(self) -> list[float]:
        """The waits before each retry: 5, 10, 20 s with the defaults."""
        return [self.retry_base_delay_s * 2**n for n in range(self.retry_max_attempts - 1)]


_PRINTABLE_ASCII = re.compile(r"[ -~]+")
_ESCAPE_HINT = (
    " (in a URL, a password holding / @ ? or # must have them percent-encoded: %2F %40 %3F %23)"
)


def _kafka_collision_name(topic: str) -> str:
    return topic.replace(".", "_")


def _keys_in(api_keys: str) -> list[str]:
    return [key.strip() for key in api_keys.split(",") if key.strip()]


def read_settings(**overrides: object) -> Settings:
    """Settings from the environment (`overrides` win), or InvalidSettings saying what is
    wrong without quoting a secret."""
    try:
        return Settings(**overrides)
    except ValidationError as error:
        raise InvalidSettings(f"invalid setting: {describe_invalid(error)}") from None


def _a_tcp_port(text: str) -> bool:
    return text.isdigit() and 1 <= int(text) <= 65535


def _url_path(conninfo: str) -> str:
    """The path of a postgres:// or postgresql:// URL, up to its query, as libpq reads it
    (a # is no fragment to it); "" for key=value pairs, and for a URL whose query comes
    before any path (`host?sslrootcert=/a@b.crt`)."""
    scheme, separator, rest = conninfo.partition("://")
    if not separator or scheme.lower() not in ("postgres", "postgresql"):
        return ""
    authority, slash, path = rest.partition("/")
    if "?" in authority.split("@", 1)[-1]:
        return ""
    return slash + path.split("?", 1)[0]


def shown_database_url(url: str) -> str:
    """A postgresql:// URL with its password, if it has one, shown as ****: for a person to
    read (a banner, a log line), never for a client to connect with."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, hosts = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:****@{hosts}"))


def misspelt_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """Variables of `environ` named almost, but not quite, like a setting: {variable: the
    setting}."""
    return misspelt_names(environ, Settings.model_fields)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings read once per process from the environment."""
    warn_of_misspelt_settings()  # first: the typo may be why the settings do not validate
    return read_settings()


@lru_cache(maxsize=1)
def warn_of_misspelt_settings() -> None:
    """A warning, once per process, for each variable of the environment that looks like a
    misspelt setting."""
    for variable, meant in misspelt_settings(os.environ).items():
        log.warning(f"{variable} is set, and no setting has that name: did you mean {meant}?")
