from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class IngressSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HAPP_INGRESS_", extra="ignore")

    host: str = "0.0.0.0"
    port: int = 8080
    max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    # How long a request may wait for the broker's ack before it gets a 503.
    publish_timeout_s: float = Field(default=5.0, gt=0)
    # Rate limits are token buckets in each replica's memory (no shared store on
    # the hot path), so with N replicas behind a round-robin load balancer each
    # one enforces 1/N of a channel's limit. Keep this equal to the replica count.
    replicas: int = Field(default=1, ge=1, le=1000)
    # How long an accepted webhook waits for its idempotency record (which tells
    # racing repeats apart) before answering "accepted" anyway; the record is
    # then completed in the background.
    idempotency_wait_s: float = Field(default=1.0, ge=0)
    # Webhook requests that may wait for their reply at once (Prefer: wait); a
    # request beyond it is answered 202 at once. Each costs a few KiB.
    max_waiting: int = Field(default=20_000, ge=0)
