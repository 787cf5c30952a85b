"""What the operators' inbox routes take and answer (SPEC §6a)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from happ_common.channels import NOT_BLANK_PATTERN
from happ_common.conversation_state import ConversationDoc, ConversationState
from happ_common.events import Author
from happ_common.urls import HTTP_URL_PATTERN


class InboxConversation(BaseModel):
    """A conversation as the inbox and the live updates show it."""

    channel_id: str
    channel_name: str | None
    sender_id: str
    sender_name: str | None
    state: ConversationState
    operator: Author | None
    unread: int
    last_message_at: datetime | None
    last_text: str | None
    handoff_at: datetime | None
    handoff_trigger: str | None
    updated_at: datetime | None

    @classmethod
    def of(cls, doc: ConversationDoc, channel_name: str | None) -> InboxConversation:
        return cls(
            channel_id=doc.channel_id,
            channel_name=channel_name,
            sender_id=doc.sender_id,
            sender_name=doc.sender_name,
            state=doc.state,
            operator=doc.operator,
            unread=doc.unread,
            last_message_at=doc.last_message_at,
            last_text=doc.last_text,
            handoff_at=doc.handoff_at,
            handoff_trigger=doc.handoff_trigger,
            updated_at=doc.updated_at,
        )


class InboxOut(BaseModel):
    waiting: list[InboxConversation]
    mine: list[InboxConversation]
    others: list[InboxConversation]


class OperatorAttachment(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["image", "file", "audio"]
    url: str = Field(max_length=2048, pattern=HTTP_URL_PATTERN)
    name: str | None = Field(default=None, max_length=256)
    mime_type: str | None = Field(default=None, max_length=128)


def _reply_schema(schema: dict[str, Any]) -> None:
    """The rule the service checks, stated in the JSON schema: a text that is not
    blank, or at least one attachment."""
    schema["anyOf"] = [
        {"properties": {"text": {"pattern": NOT_BLANK_PATTERN}}, "required": ["text"]},
        {
            "properties": {"attachments": {"type": "array", "minItems": 1}},
            "required": ["attachments"],
        },
    ]


class OperatorReplyIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra=_reply_schema)

    text: str = Field(default="", max_length=10_000)
    attachments: list[OperatorAttachment] = Field(default_factory=list, max_length=10)
    # Optional, chosen by the client: a retry with the same id (after a timeout
    # or a 503) sends the message once.
    client_message_id: str | None = Field(default=None, min_length=1, max_length=128)
