from __future__ import annotations

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class AssistantServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HAPP_ASSISTANT_", extra="ignore")

    host: str = "0.0.0.0"
    port: int = 8082
    group_id: str = "happ-assistant"
    # Default model for channels that do not name one (HAPP_ASSISTANT_MODEL).
    model: str = "gpt-4o-mini"
    openai_api_key: str | None = Field(
        default=None,
        validation_alias=AliasChoices("OPENAI_API_KEY", "HAPP_ASSISTANT_OPENAI_API_KEY"),
    )
    openai_base_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("OPENAI_BASE_URL", "HAPP_ASSISTANT_OPENAI_BASE_URL"),
    )

    @field_validator("openai_api_key", "openai_base_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # Manifests often set a variable to "" to mean "not set".
        return None if isinstance(value, str) and not value.strip() else value

    # One LLM call may take this long; failed calls are retried with backoff
    # until llm_attempts or llm_budget_s runs out, then the fallback text is sent.
    llm_timeout_s: float = Field(default=30.0, gt=0)
    llm_attempts: int = Field(default=3, ge=1, le=10)
    llm_budget_s: float = Field(default=90.0, gt=0)
    llm_backoff_s: float = Field(default=1.0, ge=0)
    # History sent to the LLM is trimmed to this many characters, newest kept.
    context_chars: int = Field(default=24_000, ge=1_000)
    max_in_flight: int = Field(default=1024, ge=1)
