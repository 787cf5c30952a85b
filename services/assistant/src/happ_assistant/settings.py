from __future__ import annotations

from typing import Literal

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
    # The HTTP transport under the OpenAI SDK. aiohttp by measurement: about
    # half httpx's CPU per reply, and more replies/s (docs/benchmarks.md,
    # `make bench-assistant`).
    llm_http_client: Literal["aiohttp", "httpx"] = "aiohttp"
    # Every record in flight may be one LLM call (one per conversation), so the
    # pool must not be the bound: a call queued for a connection burns its timeout.
    llm_max_connections: int = Field(default=1024, ge=1)
    # History sent to the LLM is trimmed to this many characters, newest kept.
    context_chars: int = Field(default=24_000, ge=1_000)
    # Records held at once (fetching pauses above it). A conversation's queued
    # messages count too, so with a backlog of 5 per conversation 1,024 records
    # keep only ~200 conversations (LLM calls) busy; 4,096 keep ~800. Records are
    # small (a few KB; ~80 KB at the ingress's limits).
    max_in_flight: int = Field(default=4096, ge=1)
    # ...and works on fewer conversations, down to 64, while this process's
    # database commands take longer than this on average: the webhook's own
    # writes then do not queue behind a draining backlog's
    # (happ_common.in_flight_limit). 100 ms is a production MongoDB in trouble;
    # the local stack's embedded database gets 20. 0: no such limit.
    db_latency_target_ms: float = Field(default=100.0, ge=0)
    # Recent history of this many conversations is kept in memory (least recently
    # used dropped first); each holds at most what its prompt can use (the channel's
    # max_history, within context_chars).
    history_cache_conversations: int = Field(default=10_000, ge=1)
    # ...and no more than this many bytes of it in all (estimated, metadata and
    # attachments counted): 10,000 conversations of 20 messages with a few KB of
    # metadata each would otherwise take several GB.
    history_cache_bytes: int = Field(default=256 * 1024 * 1024, ge=1024 * 1024)
    # Database writes and reads of concurrent messages are gathered this long
    # (or up to db_batch_max operations) into one round trip.
    db_batch_wait_s: float = Field(default=0.005, ge=0, le=1)
    db_batch_max: int = Field(default=500, ge=1, le=10_000)
