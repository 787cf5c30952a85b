"""Conversation messages: both sides of every conversation, and their status.

The assistant writes them, the admin API reads them. A reply's delivery state
lives in ``deliveries`` (happ_common.deliveries), written by the delivery
service; the admin API shows it with the reply (``happ_admin.conversations``).
A message is identified by ``(channel_id, message_id)`` (unique index): each is
inserted once, a redelivered Kafka message finding its documents there.

What came of a user's message that something was sent for is stored on what
was sent (``in_reply_to_handling``), written once with it, rather than by an
update of the message (issue #14: an updated document costs the embedded
database about four inserted ones). ``answered`` puts it back on the message
for readers; a message with nothing sent (ignored, left for a person) is still
updated with its handling.

A user's message sent with an id (``message_id`` or ``Idempotency-Key``) is
stored by the ingress once the broker has it: the document is also the
webhook's idempotency record and keeps the request's log entry
(``ACCEPTED_REQUEST``), one document for the three (issue #14: documents per
message). The assistant stores it from the event when it is not there yet (a
message sent without an id, or a record late or lost); both write the same
document (``user_message_document``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from happ_common.events import (
    Attachment,
    Author,
    ConversationEvent,
    InboundMessage,
    OutboundReply,
)
from happ_common.ids import conversation_id, output_ids_for
from happ_common.mongo import Document

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
    # Replies, notices and handoff events: the handling of the message they answer.
    in_reply_to_handling: Handling | None = None
    updated_at: datetime | None = None


M = TypeVar("M", bound=StoredMessage)

# On a user's message stored by the ingress: the accepting request's log entry,
# and its token (``InboundMessage.accepted_by``).
ACCEPTED_REQUEST = "request"
ACCEPTED_BY = "accepted_by"
# Message reads leave the kept request (its body up to 16 KiB) on the server.
WITHOUT_REQUEST: Document = {ACCEPTED_REQUEST: 0, ACCEPTED_BY: 0}


def user_message(event: InboundMessage) -> StoredMessage:
    return StoredMessage(
        channel_id=event.channel_id,
        message_id=event.message_id,
        sender_id=event.sender_id,
        sender_name=event.sender_name,
        role="user",
        text=event.text,
        attachments=event.attachments,
        metadata=event.metadata,
        created_at=event.received_at,
        status="accepted",
    )


def message_document(message: StoredMessage) -> Document:
    """A message as inserted into ``messages``."""
    doc = message.model_dump()
    doc["updated_at"] = datetime.now(UTC)
    return doc


def user_message_document(event: InboundMessage) -> Document:
    """A user's message as stored by whichever of the ingress and the assistant
    stores it first (the unique ``(channel_id, message_id)`` settles which). Its
    ``_id`` is left to the driver: an ObjectId, whose order breaks ties between
    messages stored within the same millisecond (history reads sort on it)."""
    doc = message_document(user_message(event))
    if event.accepted_by is not None:
        doc[ACCEPTED_BY] = event.accepted_by
    return doc


def handled(message: StoredMessage) -> bool:
    """Whether the assistant is done with a message (given ``answered``): a user's
    message stored by the ingress and not handled yet is not part of its
    conversation's history until its turn comes."""
    return message.role != "user" or message.reply_id is not None or message.handling is not None


def answered(message: M, outputs: Mapping[str, StoredMessage]) -> M:
    """A user's message with what came of it, taken from the first of its outputs
    found in ``outputs`` (by message id: its reply or notice, else its handoff event): the
    message itself is not updated once something is sent for it. Unchanged when
    none is there, or when its document already says (written before #14)."""
    if message.role != "user" or message.reply_id is not None:
        return message
    sent = [
        output
        for output_id in output_ids_for(message.channel_id, message.message_id)
        if (output := outputs.get(output_id)) is not None
        and output.in_reply_to == message.message_id
    ]
    if not sent:
        return message
    # The handling from the handoff event when there is one: only a handoff
    # writes it, even where another instance stored the reply first and decided
    # otherwise (the partition moved while the model was answering).
    return message.model_copy(
        update={
            "status": "replied",
            "reply_id": sent[0].message_id,
            "handling": sent[-1].in_reply_to_handling or message.handling,
        }
    )


def all_answered(messages: list[StoredMessage]) -> list[StoredMessage]:
    """``answered`` over a list that holds the outputs too (a loaded history)."""
    by_id = {m.message_id: m for m in messages}
    return [answered(m, by_id) if m.role == "user" else m for m in messages]


def conversation_touch(
    channel_id: str,
    sender_id: str,
    sender_name: str | None,
    at: datetime,
    last_text: str | None = None,
) -> tuple[Document, Document]:
    """Filter and update (an upsert) recording activity at ``at`` in a conversation,
    for callers that batch many writes into one ``bulk_write``."""
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
