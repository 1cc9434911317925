"""The one settings object of the service, read from environment variables.

Every field's env var is its name in upper case; the README lists them all with
their defaults. Nothing reads settings at import time: call `get_settings()`.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    # PostgreSQL
    database_url: str = "postgresql://postgres@127.0.0.1:5432/moderation"
    db_pool_min_size: int = Field(default=1, ge=0)
    db_pool_max_size: int = Field(default=10, ge=1)
    db_connect_timeout_s: float = Field(default=5.0, gt=0)
    db_statement_timeout_ms: int = Field(default=5000, ge=0)

    # Kafka
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_moderation_topic: str = "moderation"
    kafka_dlq_topic: str = "moderation_dlq"
    kafka_moderation_partitions: int = Field(default=3, ge=1)
    kafka_dlq_partitions: int = Field(default=1, ge=1)
    kafka_replication_factor: int = Field(default=1, ge=1)
    kafka_consumer_group: str = "moderation-consumer"
    kafka_publish_timeout_s: float = Field(default=2.0, gt=0)

    # Consumer
    consumer_batch_size: int = Field(default=500, ge=1)
    consumer_poll_timeout_s: float = Field(default=1.0, gt=0)

    # Retries of temporary errors: attempt n waits retry_base_delay_s * 2**(n-1).
    retry_base_delay_s: float = Field(default=5.0, ge=0)
    retry_max_attempts: int = Field(default=4, ge=1)

    # Outbox relay: republishes tasks whose immediate publish did not get through.
    outbox_relay_interval_s: float = Field(default=1.0, gt=0)
    outbox_grace_s: float = Field(default=5.0, ge=0)
    outbox_batch_size: int = Field(default=500, ge=1)

    # Model
    model_uri: str = "var/models/default"

    # HTTP
    api_keys: str = ""
    max_body_bytes: int = Field(default=64 * 1024, ge=1)
    retry_after_s: int = Field(default=5, ge=1)

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

    @property
    def api_key_list(self) -> list[str]:
        return [key.strip() for key in self.api_keys.split(",") if key.strip()]

    def retry_delays(self) -> list[float]:
        """The waits before each retry: 5, 10, 20 s with the defaults."""
        return [self.retry_base_delay_s * 2**n for n in range(self.retry_max_attempts - 1)]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings read once per process from the environment."""
    return Settings()
