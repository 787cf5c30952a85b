from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class AdminSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HAPP_ADMIN_", extra="ignore")

    host: str = "0.0.0.0"
    port: int = 8081
    # One token, or several separated by commas (rotate them without downtime).
    token: str = Field(
        default="", validation_alias=AliasChoices("HAPP_ADMIN_TOKEN", "HAPP_ADMIN_TOKENS")
    )

    def tokens(self) -> list[str]:
        return [t.strip() for t in self.token.split(",") if t.strip()]
