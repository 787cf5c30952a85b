from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class AdminSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="HAPP_ADMIN_", extra="ignore", validate_by_name=True
    )

    host: str = "0.0.0.0"
    port: int = 8081
    # One token, or several separated by commas (rotate them without downtime).
    token: str = Field(
        default="", validation_alias=AliasChoices("HAPP_ADMIN_TOKEN", "HAPP_ADMIN_TOKENS")
    )
    # How long a UI sign-in lasts; the session is also dropped as soon as the
    # token it was opened with is removed from HAPP_ADMIN_TOKEN.
    session_ttl_hours: float = Field(default=12.0, gt=0, le=24 * 30)
    # Live updates (GET /api/events): how often the conversations that changed
    # are read, and how often an idle stream sends a keepalive comment.
    live_poll_s: float = Field(default=0.5, gt=0, le=60)
    live_keepalive_s: float = Field(default=15.0, gt=0, le=300)
    # How often happ_channels_deliveries_disabled is read from the database.
    health_poll_s: float = Field(default=30.0, gt=0, le=600)
    # None: mark the cookie Secure when the request came over HTTPS. Set true
    # behind a TLS-terminating proxy that talks plain HTTP to the admin.
    cookie_secure: bool | None = None
    # "Send test" makes the same kind of request as the delivery service, so it
    # reads the delivery service's variables: one setting, one behaviour.
    delivery_ca_file: str | None = Field(
        default=None,
        validation_alias=AliasChoices("HAPP_DELIVERY_CA_FILE", "HAPP_ADMIN_DELIVERY_CA_FILE"),
    )
    delivery_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=120,
        validation_alias=AliasChoices("HAPP_DELIVERY_TIMEOUT_S", "HAPP_ADMIN_DELIVERY_TIMEOUT_S"),
    )

    def tokens(self) -> list[str]:
        return [t.strip() for t in self.token.split(",") if t.strip()]
