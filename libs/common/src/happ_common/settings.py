"""Settings shared by every service.

Infrastructure variables carry no prefix (``KAFKA_BOOTSTRAP_SERVERS``,
``MONGODB_URI``) so one environment serves every process and every tool;
product-wide switches carry ``HAPP_``; each service adds its own class with its
own prefix (``HAPP_INGRESS_``, ``HAPP_DELIVERY_``, ...).
"""

from __future__ import annotations

from pydantic import Field
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


class HappSettings(BaseSettings):
    """Product-wide settings used by more than one service."""

    model_config = SettingsConfigDict(env_prefix="HAPP_", extra="ignore")

    public_url: str = "http://localhost:8080"
    allow_private_endpoints: bool = False
    log_level: str = "INFO"
    # How long the previous secret keeps verifying after a rotation.
    secret_overlap_hours: float = Field(default=24.0, ge=0)
    # Channel settings are cached in memory on hot paths; this is how stale they may be.
    channel_cache_ttl_s: float = Field(default=1.0, gt=0, le=60)
    request_log_retention_days: int = Field(default=30, ge=1, le=3650)
    # Request-log entries wait in memory for their batched write; while MongoDB is
    # slow or away they pile up to this many bytes (estimated), then the oldest go.
    request_log_buffer_bytes: int = Field(default=REQUEST_LOG_BUFFER_BYTES, ge=1024 * 1024)
