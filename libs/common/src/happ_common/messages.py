"""Conversation messages: both sides of every conversation, and their status.

The assistant writes them, the admin API reads them. A reply's delivery state
lives in ``deliveries`` (happ_common.deliveries); the admin API shows it on the
reply through the delivery fields below. A message is identified by
``(channel_id, message_id)`` (unique index): writes are upserts keyed on that
pair, so a redelivered Kafka message rewrites the same document instead of
adding a second one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase

from happ_common.events import Attachment, Author, ConversationEvent, OutboundReply
from happ_common.mongo import CONVERSATIONS, MESSAGES, Document

# ``system``: notices HAPP sends on its own (handoff events, off-hours and rate notices).
Role = Literal["user", "assistant", "operator", "system"]
# Incoming message: accepted → replied → delivered | retrying | failed | canceled.
# A reply carries the delivery half of that: pending → delivered | retrying | failed | canceled.
MessageStatus = Literal[
    "accepted", "replied", "pending", "delivered", "retrying", "failed", "canceled"
]


class LlmTrace(BaseModel):
    provider: str
    model: str | None = None
    latency_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: str | None = None
    fallback: bool = False
    # The model called handoff_to_operator.
    tool_handoff: bool = False


# What the filters and the conversation's state decided for a user's message (SPEC §6a).
Outcome = Literal[
    "answered",  # by the assistant
    "ignored",  # sender on ignore_senders: accepted, logged, never answered
    "rate_notice",  # over sender_rate_per_minute: told once...
    "rate_limited",  # ...then silence until the window passes
    "off_hours",  # outside working_hours: off_hours_text sent
    "handoff",  # this message moved the conversation to the operators
    "for_operator",  # the conversation was already waiting for or held by a person
]


class Handling(BaseModel):
    model_config = ConfigDict(extra="ignore")

    outcome: Outcome
    # What decided it: "keyword:<word>", "route:<pattern>", "tool", "fallback", "mode",
    # "off_hours", "conversation:<state>".
    trigger: str | None = None


class StoredMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    channel_id: str
    message_id: str
    sender_id: str
    role: Role
    text: str
    sender_name: str | None = None
    attachments: list[Attachment] = Field(default_factory=list)
    metadata: dict[str, Any] | None = None
    created_at: datetime
    status: MessageStatus
    in_reply_to: str | None = None
    reply_id: str | None = None
    llm: LlmTrace | None = None
    # Replies: who wrote it (None: the assistant), and the event a notice announces.
    author: Author | None = None
    event: ConversationEvent | None = None
    # User messages: what the filters decided (None: answered, or not decided yet).
    handling: Handling | None = None
    attempts: int = 0
    last_error_code: str | None = None
    last_status_code: int | None = None
    updated_at: datetime | None = None
    # A reply's delivery state, filled in from ``deliveries`` by the admin API.
    delivered_at: datetime | None = None
    last_attempt_at: datetime | None = None
    next_attempt_at: datetime | None = None


class MessageRepository:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._messages = db[MESSAGES]
        self._conversations = db[CONVERSATIONS]

    async def upsert(self, message: StoredMessage) -> None:
        doc = message.model_dump()
        doc["updated_at"] = datetime.now(UTC)
        await self._messages.update_one(
            {"channel_id": message.channel_id, "message_id": message.message_id},
            {"$set": doc},
            upsert=True,
        )

    async def get(self, channel_id: str, message_id: str) -> StoredMessage | None:
        doc = await self._messages.find_one({"channel_id": channel_id, "message_id": message_id})
        return StoredMessage.model_validate(doc) if doc else None

    async def recent(self, channel_id: str, sender_id: str, limit: int) -> list[StoredMessage]:
        """The last ``limit`` messages of a conversation, oldest first."""
        if limit <= 0:
            return []
        cursor = (
            self._messages.find({"channel_id": channel_id, "sender_id": sender_id})
            .sort([("created_at", DESCENDING), ("_id", DESCENDING)])
            .limit(limit)
        )
        docs = await cursor.to_list(None)
        return [StoredMessage.model_validate(d) for d in reversed(docs)]

    async def conversation(
        self, channel_id: str, sender_id: str, *, limit: int = 100
    ) -> list[StoredMessage]:
        cursor = (
            self._messages.find({"channel_id": channel_id, "sender_id": sender_id})
            .sort([("created_at", ASCENDING), ("_id", ASCENDING)])
            .limit(limit)
        )
        return [StoredMessage.model_validate(d) async for d in cursor]

    async def set_status(
        self, channel_id: str, message_id: str, status: MessageStatus, **fields: Any
    ) -> None:
        await self._messages.update_one(
            {"channel_id": channel_id, "message_id": message_id},
            {"$set": {"status": status, "updated_at": datetime.now(UTC), **fields}},
        )

    async def touch_conversation(
        self, channel_id: str, sender_id: str, sender_name: str | None, at: datetime
    ) -> None:
        query, update = conversation_touch(channel_id, sender_id, sender_name, at)
        await self._conversations.update_one(query, update, upsert=True)


def conversation_id(channel_id: str, sender_id: str) -> str:
    """The ``_id`` of a conversation's document in ``conversations``."""
    return f"{channel_id}\n{sender_id}"


def conversation_touch(
    channel_id: str,
    sender_id: str,
    sender_name: str | None,
    at: datetime,
    last_text: str | None = None,
) -> tuple[Document, Document]:
    """Filter and update (an upsert) recording activity at ``at`` in a conversation.

    Separate from ``MessageRepository.touch_conversation`` so callers that batch
    many writes into one ``bulk_write`` build the very same document.
    """
    update: Document = {
        "$max": {"last_message_at": at},
        "$setOnInsert": {
            "first_message_at": at,
            "channel_id": channel_id,
            "sender_id": sender_id,
        },
    }
    # updated_at feeds the admin's live updates (GET /api/events).
    update["$set"] = {"updated_at": datetime.now(UTC)}
    if sender_name:
        update["$set"]["sender_name"] = sender_name
    if last_text is not None:
        update["$set"]["last_text"] = last_text[:200]
    return {"_id": conversation_id(channel_id, sender_id)}, update


def outbound(
    message: StoredMessage, metadata: dict[str, Any] | None, *, resend: bool = False
) -> OutboundReply:
    """The ``outbound.replies`` event that delivers a stored reply, notice or
    operator message (the assistant publishing it, the admin API resending it)."""
    return OutboundReply(
        channel_id=message.channel_id,
        reply_id=message.message_id,
        in_reply_to=message.in_reply_to,
        to=message.sender_id,
        text=message.text,
        metadata=metadata,
        created_at=message.created_at,
        author=message.author,
        event=message.event,
        attachments=message.attachments,
        resend=resend,
    )
