"""The webhook's request and response bodies (SPEC §3)."""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import to_json

from happ_common.events import AttachmentType

MAX_METADATA_BYTES = 16 * 1024


class AttachmentIn(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    type: AttachmentType
    url: str = Field(max_length=2048)
    name: str | None = Field(default=None, max_length=1024)
    mime_type: str | None = Field(default=None, max_length=255)

    @field_validator("url")
    @classmethod
    def _absolute_http_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an absolute http(s) URL")
        return url


class WebhookPayload(BaseModel):
    """An incoming message. Unknown fields are ignored; types are not coerced."""

    model_config = ConfigDict(extra="ignore", strict=True)

    sender_id: str = Field(min_length=1, max_length=256)
    text: str = Field(max_length=10_000)
    sender_name: str | None = Field(default=None, max_length=256)
    metadata: dict[str, Any] | None = None
    attachments: list[AttachmentIn] = Field(default_factory=list, max_length=10)
    message_id: str | None = Field(default=None, min_length=1, max_length=128)

    @field_validator("attachments", mode="before")
    @classmethod
    def _null_is_none(cls, value: object) -> object:
        # Integrators serialise "no attachments" as null as often as they omit it.
        return [] if value is None else value

    @field_validator("metadata")
    @classmethod
    def _metadata_size(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            size = len(to_json(value))
            if size > MAX_METADATA_BYTES:
                raise ValueError(f"must be at most 16 KiB as JSON (is {size} bytes)")
        return value

    @model_validator(mode="after")
    def _text_or_attachments(self) -> WebhookPayload:
        if self.text == "" and not self.attachments:
            raise ValueError("text may be empty only when attachments are sent")
        return self


class Accepted(BaseModel):
    status: Literal["accepted"] = "accepted"
    message_id: str
    channel_id: str


class Duplicate(BaseModel):
    status: Literal["duplicate"] = "duplicate"
    message_id: str
