"""What the conversation and message routes answer."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from happ_admin.conversations.repository import ShownMessage
from happ_admin.cursors import Page
from happ_admin.request_log.schemas import LogEntryOut
from happ_common.conversation_state import ConversationState
from happ_common.events import Attachment, Author, ConversationEvent
from happ_common.messages import Handling, LlmTrace, MessageStatus, Role


class ConversationOut(BaseModel):
    sender_id: str
    sender_name: str | None
    first_message_at: datetime | None
    last_message_at: datetime | None
    message_count: int
    last_text: str | None
    state: ConversationState = "assistant"
    operator: Author | None = None
    unread: int = 0


class ConversationPage(Page[ConversationOut]):
    pass


class DeliveryOut(BaseModel):
    """Where a reply's delivery stands (replies only)."""

    status: MessageStatus
    attempts: int
    last_status_code: int | None
    last_error_code: str | None


class MessageOut(BaseModel):
    message_id: str
    role: Role
    sender_id: str
    sender_name: str | None
    text: str
    attachments: list[Attachment]
    metadata: dict[str, Any] | None
    created_at: datetime
    status: MessageStatus
    in_reply_to: str | None
    reply_id: str | None
    delivery: DeliveryOut | None
    llm: LlmTrace | None
    # SPEC §6a: who wrote a reply (null: the assistant), the event a notice
    # announces, and what the filters decided for a user's message.
    author: Author | None = None
    event: ConversationEvent | None = None
    handling: Handling | None = None

    @classmethod
    def of(cls, m: ShownMessage) -> MessageOut:
        delivery = None
        if m.role != "user":
            delivery = DeliveryOut(
                status=m.status,
                attempts=m.attempts,
                last_status_code=m.last_status_code,
                last_error_code=m.last_error_code,
            )
        return cls(
            message_id=m.message_id,
            role=m.role,
            sender_id=m.sender_id,
            sender_name=m.sender_name,
            text=m.text,
            attachments=m.attachments,
            metadata=m.metadata,
            created_at=m.created_at,
            status=m.status,
            in_reply_to=m.in_reply_to,
            reply_id=m.reply_id,
            delivery=delivery,
            llm=m.llm,
            author=m.author,
            event=m.event,
            handling=m.handling,
        )


class MessagePage(Page[MessageOut]):
    pass


TrackedStatus = Literal["accepted", "replied", "delivered", "retrying", "failed", "canceled"]


class MessageStatusOut(BaseModel):
    """Where an incoming message is, from the webhook's 200 to its reply's delivery."""

    channel_id: str
    message_id: str
    status: TrackedStatus
    # Null while only the ingress has seen the message (it is on the broker,
    # the assistant has not stored it yet).
    message: MessageOut | None
    reply: MessageOut | None
    # Every delivery attempt of the reply, oldest first (resends included).
    attempts: list[LogEntryOut]
