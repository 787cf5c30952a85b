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
    # A repeat that finds its first copy still being enqueued waits this long for it.
    idempotency_wait_s: float = Field(default=5.0, ge=0)
