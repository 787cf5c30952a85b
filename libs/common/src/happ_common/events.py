"""The events on the three topics: the contract between the services.

Every event is keyed by conversation (``ids.conversation_key``) so one
conversation's events share a partition and keep their order.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

AttachmentType = Literal["image", "file", "audio"]


class Attachment(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: AttachmentType
    url: str
    name: str | None = None
    mime_type: str | None = None


class InboundMessage(BaseModel):
    """``inbound.messages``: a user's message the ingress accepted."""

    model_config = ConfigDict(extra="ignore")

    v: Literal[1] = 1
    channel_id: str
    message_id: str
    sender_id: str
    sender_name: str | None = None
    text: str
    metadata: dict[str, Any] | None = None
    attachments: list[Attachment] = Field(default_factory=list)
    received_at: datetime


class OutboundReply(BaseModel):
    """``outbound.replies``: a reply to deliver to the channel's endpoint."""

    model_config = ConfigDict(extra="ignore")

    v: Literal[1] = 1
    channel_id: str
    reply_id: str
    in_reply_to: str | None
    to: str
    text: str
    metadata: dict[str, Any] | None = None
    created_at: datetime
    test: bool = False
    # Set by the admin API's resend: deliver again even if the last series ended.
    resend: bool = False


class DeliveryRetry(BaseModel):
    """``delivery.retry``: the next attempt of a reply, not before ``due_at``."""

    model_config = ConfigDict(extra="ignore")

    v: Literal[1] = 1
    reply: OutboundReply
    attempt: int = Field(ge=2)
    due_at: datetime
