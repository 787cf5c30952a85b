"""Settings shared by every service.

Infrastructure variables carry no prefix (``KAFKA_BOOTSTRAP_SERVERS``,
``MONGODB_URI``) so one environment serves every process and every tool;
product-wide switches carry ``HAPP_``; each service adds its own class with its
own prefix (``HAPP_INGRESS_``, ``HAPP_DELIVERY_``, ...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The request-log buffer's default bound (HAPP_REQUEST_LOG_BUFFER_BYTES).
REQUEST_LOG_BUFFER_BYTES = 64 * 1024 * 1024


class InfraSettings(BaseSettings):
    """Where the broker and the database are."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore")

    kafka_bootstrap_servers: str = "localhost:9092"
    mongodb_uri: str = "mongodb://localhost:27017"
    mongodb_db: str = "happ"
    # Partitions bound the parallelism of a consumer group; every topic keyed by
    # conversation must have the same count so the delivery service can read
    # outbound.replies and delivery.retry co-partitioned.
    kafka_partitions: int = Field(default=12, ge=1, le=1024)
    kafka_replication_factor: int = Field(default=1, ge=1, le=16)
    # How long a consumer that stopped heartbeating (killed, frozen, cut off)
    # keeps its partitions before the group hands them to the others: the
    # pause a crash costs its partitions. Brokers refuse less than their
    # group.min.session.timeout.ms (6 s by default).
    kafka_session_timeout_ms: int = Field(default=10_000, ge=6_000, le=300_000)
    # How long a consumer's fetch may wait at the broker for records. A Kafka
    # broker answers as soon as a record arrives, so this only paces idle
    # polling; the embedded development broker holds every fetch this long
    # whatever arrives (README, "the local stack's consumers fetch with a 20 ms
    # wait"), so the local stack sets 20.
    kafka_fetch_max_wait_ms: int = Field(default=500, ge=1, le=30_000)
    # Topics HAPP creates keep their records this long (existing topics are left alone).
    kafka_retention_hours: float = Field(default=168, gt=0)
    kafka_dead_letter_retention_hours: float = Field(default=720, gt=0)
    # How every Kafka client (producers, consumers, the admin client) connects:
    # happ_common.kafka_connection turns these into the clients' options.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_ssl_ca_file: Path | None = None  # None: the system's trusted CAs
    kafka_ssl_cert_file: Path | None = None  # a client certificate (mutual TLS)
    kafka_ssl_key_file: Path | None = None
    kafka_ssl_key_password: SecretStr | None = None
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    # The workers' producer (replies, retries, operators' commands) dedupes its own
    # resends on the broker (the ingress's producer never: see kafka.py). The
    # embedded development broker refuses it (InitProducerId), so the local stack
    # turns it off.
    kafka_enable_idempotence: bool = True

    @model_validator(mode="after")
    def _security_is_complete(self) -> Self:
        """A half-configured connection is refused at startup, naming what is missing,
        rather than silently connecting without the part that was forgotten."""
        sasl = self.kafka_security_protocol.startswith("SASL_")
        tls = self.kafka_security_protocol.endswith("SSL")
        if sasl:
            missing = [
                name
                for name, value in (
                    ("KAFKA_SASL_MECHANISM", self.kafka_sasl_mechanism),
                    ("KAFKA_SASL_USERNAME", self.kafka_sasl_username),
                    ("KAFKA_SASL_PASSWORD", self.kafka_sasl_password),
                )
                if not value
            ]
            if missing:
                raise ValueError(
                    f"KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                    f"{', '.join(missing)}"
                )
        elif self.kafka_sasl_mechanism or self.kafka_sasl_username or self.kafka_sasl_password:
            raise ValueError(
                "KAFKA_SASL_* is set but KAFKA_SECURITY_PROTOCOL is "
                f"{self.kafka_security_protocol}: use SASL_SSL (or SASL_PLAINTEXT)"
            )
        if not tls and (self.kafka_ssl_ca_file or self.kafka_ssl_cert_file):
            raise ValueError(
                "KAFKA_SSL_* is set but KAFKA_SECURITY_PROTOCOL is "
                f"{self.kafka_security_protocol}: use SSL (or SASL_SSL)"
            )
        if (self.kafka_ssl_cert_file is None) != (self.kafka_ssl_key_file is None):
            raise ValueError("KAFKA_SSL_CERT_FILE and KAFKA_SSL_KEY_FILE go together")
        return self


class TracingSettings(BaseSettings):
    """OpenTelemetry's own variables: tracing is on once an OTLP endpoint is set."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore")

    otel_exporter_otlp_endpoint: str | None = None
    otel_exporter_otlp_traces_endpoint: str | None = None
    otel_service_name: str | None = None
    otel_sdk_disabled: bool = False

    @property
    def enabled(self) -> bool:
        endpoint = self.otel_exporter_otlp_traces_endpoint or self.otel_exporter_otlp_endpoint
        return bool(endpoint) and not self.otel_sdk_disabled


class HappSettings(BaseSettings):
    """Product-wide settings used by more than one service."""

    model_config = SettingsConfigDict(env_prefix="HAPP_", extra="ignore")

    public_url: str = "http://localhost:8080"
    allow_private_endpoints: bool = False
    log_level: str = "INFO"
    # json: one object per line, with channel_id, conversation_id and message_id
    # on every line that concerns a message (happ_common.log_context).
    log_format: Literal["text", "json"] = "text"
    # How long the previous secret keeps verifying after a rotation.
    secret_overlap_hours: float = Field(default=24.0, ge=0)
    # Channel settings are cached in memory on hot paths; this is how stale they may be.
    channel_cache_ttl_s: float = Field(default=1.0, gt=0, le=60)
    request_log_retention_days: int = Field(default=30, ge=1, le=3650)
    # Request-log entries wait in memory for their batched write; while MongoDB is
    # slow or away they pile up to this many bytes (estimated), then the oldest go.
    request_log_buffer_bytes: int = Field(default=REQUEST_LOG_BUFFER_BYTES, ge=1024 * 1024)
