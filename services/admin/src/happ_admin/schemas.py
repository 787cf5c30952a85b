"""Request and response bodies of the admin API (SPEC §5)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from happ_common.channels import AssistantSettings, Channel, ChannelStatus


class ChannelCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    outgoing_url: str = Field(max_length=2048)
    require_signature: bool = False
    rate_limit_per_second: int = Field(default=100, ge=1, le=100_000)
    assistant: AssistantSettings = Field(default_factory=AssistantSettings)


class AssistantPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    system_prompt: str | None = Field(default=None, max_length=20_000)
    model: str | None = Field(default=None, max_length=200)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    max_history: int | None = Field(default=None, ge=0, le=200)
    fallback_text: str | None = Field(default=None, min_length=1, max_length=4_000)


class ChannelUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    outgoing_url: str | None = Field(default=None, max_length=2048)
    require_signature: bool | None = None
    rate_limit_per_second: int | None = Field(default=None, ge=1, le=100_000)
    assistant: AssistantPatch | None = None


class ConnectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    outgoing_url: str | None = Field(default=None, max_length=2048)


class ChannelOut(BaseModel):
    id: str
    name: str
    status: ChannelStatus
    webhook_url: str
    outgoing_url: str
    hmac_secret: str
    require_signature: bool
    rate_limit_per_second: int
    assistant: AssistantSettings
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, channel: Channel, public_url: str) -> ChannelOut:
        return cls(
            id=channel.id,
            name=channel.name,
            status=channel.status,
            webhook_url=f"{public_url.rstrip('/')}/webhook/{channel.id}",
            outgoing_url=channel.outgoing_url,
            hmac_secret=channel.hmac_secret,
            require_signature=channel.require_signature,
            rate_limit_per_second=channel.rate_limit_per_second,
            assistant=channel.assistant,
            created_at=channel.created_at,
            updated_at=channel.updated_at,
        )


class ChannelList(BaseModel):
    items: list[ChannelOut]
    next_cursor: str | None
