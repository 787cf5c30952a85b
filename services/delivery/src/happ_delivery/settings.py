from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class DeliverySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HAPP_DELIVERY_", extra="ignore")

    host: str = "0.0.0.0"
    port: int = 8083
    group_id: str = "happ-delivery"
    timeout_s: float = Field(default=10.0, gt=0, le=120)
    # A typing event's one POST: the reply behind it waits for it, so it is short.
    typing_timeout_s: float = Field(default=2.0, gt=0, le=120)
    # Seconds before each retry: 4 attempts in all with the default "5,15,60".
    retry_delays: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: [5.0, 15.0, 60.0]
    )
    # An endpoint's 429 or 503 with Retry-After pauses its channel for that long
    # (at most max_retry_after_s) without spending an attempt, up to max_pauses
    # times per reply; past that such answers count as attempts, so a reply
    # still ends (happ_delivery.pace).
    max_retry_after_s: float = Field(default=300.0, ge=0, le=86_400)
    max_pauses: int = Field(default=10, ge=0, le=1000)
    ca_file: str | None = None
    max_in_flight: int = Field(default=2048, ge=1)
    # Records parked off the in-flight budget (behind a closed gate, a retry not
    # yet due, a full channel): bounded in bytes, fetching pauses above it.
    max_parked_bytes: int = Field(default=256 * 1024 * 1024, ge=1024 * 1024)
    # One channel's share of it: over this, its webhook answers 429 until its
    # waiting replies are back under half of it (happ_delivery.backlog).
    max_parked_bytes_per_channel: int = Field(default=32 * 1024 * 1024, ge=1024)
    # How long one mark lasts, renewed until then; the app makes it at least
    # twice the channel cache's lifetime plus 2 s, or the ingress could miss it.
    backlog_lease_s: float = Field(default=5.0, ge=1, le=300)
    max_connections: int = Field(default=512, ge=1)
    # One tenant's share: a slow or dead endpoint holds at most this many.
    max_connections_per_channel: int = Field(default=32, ge=1)
    max_connections_per_host: int = Field(default=64, ge=1)
    # A channel whose endpoint has failed every attempt for this long gets its
    # deliveries turned off (happ_common.endpoint_health); 0: never.
    auto_disable_after_hours: float = Field(default=72.0, ge=0)

    @model_validator(mode="after")
    def _share_within_budget(self) -> DeliverySettings:
        if self.max_parked_bytes_per_channel > self.max_parked_bytes:
            raise ValueError(
                "HAPP_DELIVERY_MAX_PARKED_BYTES_PER_CHANNEL must not exceed "
                "HAPP_DELIVERY_MAX_PARKED_BYTES: the budget every channel shares would "
                "fill before any channel's share"
            )
        return self

    @field_validator("retry_delays", mode="before")
    @classmethod
    def _parse_delays(cls, value: object) -> object:
        if isinstance(value, str):
            return [float(v) for v in value.split(",") if v.strip()]
        return value

    @field_validator("retry_delays")
    @classmethod
    def _non_negative(cls, value: list[float]) -> list[float]:
        if any(v < 0 for v in value):
            raise ValueError("retry delays must be >= 0")
        return value
