"""The events on the three topics: the contract between the services.

Every event is keyed by conversation (``ids.conversation_key``) so one
conversation's events share a partition and keep their order.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter

AttachmentType = Literal["image", "file", "audio"]


class Attachment(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: AttachmentType
    url: str
    name: str | None = None
    mime_type: str | None = None


AuthorType = Literal["assistant", "operator", "system"]
# What a body with an ``event`` announces; a body without one is a message.
# handoff: to a person (text: the channel's handoff_text); operator_joined: a
# person took over a conversation already waiting for one; hand_back: to the
# assistant again; closed.
ConversationEvent = Literal["handoff", "operator_joined", "hand_back", "closed"]
# typing: the assistant has started on the user's message (channels with
# ``typing_events``). Outgoing only, never stored as a message: the delivery
# service sends it once, best-effort, and drops it rather than send it late.
TYPING: Literal["typing"] = "typing"
OutboundEvent = Literal["handoff", "operator_joined", "hand_back", "closed", "typing"]


class Author(BaseModel):
    """Who wrote an outgoing message. ``id`` is the operator's user id, kept
    internal: the outgoing body shows only ``type`` and ``name``."""

    model_config = ConfigDict(extra="ignore")

    type: AuthorType
    name: str
    id: str | None = None


ASSISTANT = Author(type="assistant", name="Assistant")
SYSTEM = Author(type="system", name="System")


class InboundMessage(BaseModel):
    """``inbound.messages``: a user's message the ingress accepted."""

    model_config = ConfigDict(extra="ignore")

    v: Literal[1] = 1
    type: Literal["message"] = "message"
    channel_id: str
    message_id: str
    sender_id: str
    sender_name: str | None = None
    text: str
    metadata: dict[str, Any] | None = None
    attachments: list[Attachment] = Field(default_factory=list)
    received_at: datetime
    accepted_by: str | None = Field(
        default=None,
        description="The accepting webhook request's token (a message sent with an id). "
        "The ingress stores the message as its accepted record after the broker's ack; "
        "should the assistant store it first, from this event, it stores the token with "
        "it, and the ingress still recognises the message as its own copy's.",
    )


CommandType = Literal["operator_reply", "take", "hand_back", "close"]


class ConversationCommand(BaseModel):
    """``inbound.messages``: what a person did to a conversation (admin API).

    It travels the conversation's own partition, so the assistant service applies
    it in order with the user's messages: an operator's reply is published after
    every AI reply the assistant committed before it, and joins the history the
    assistant reads after a hand-back.
    """

    model_config = ConfigDict(extra="ignore")

    v: Literal[1] = 1
    type: CommandType
    channel_id: str
    sender_id: str
    # The operator reply's message id, or the id of the event this command emits.
    message_id: str
    operator: Author
    text: str = ""
    attachments: list[Attachment] = Field(default_factory=list)
    at: datetime
    # take: the conversation was the assistant's, so the user is told of the handoff.
    announce: bool = False


def _inbound_type(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return "message" if kind in (None, "message") else "command"


InboundEvent = Annotated[
    Annotated[InboundMessage, Tag("message")] | Annotated[ConversationCommand, Tag("command")],
    Discriminator(_inbound_type),
]
INBOUND_EVENT: TypeAdapter[InboundMessage | ConversationCommand] = TypeAdapter(InboundEvent)


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
    # None: the assistant (records from before authors existed).
    author: Author | None = None
    event: OutboundEvent | None = None
    attachments: list[Attachment] = Field(default_factory=list)
    # Set by the admin API's resend: deliver again even if the last series ended.
    resend: bool = False


class DeliveryRetry(BaseModel):
    """``delivery.retry``: the next attempt of a reply, not before ``due_at``."""

    model_config = ConfigDict(extra="ignore")

    v: Literal[1] = 1
    reply: OutboundReply
    attempt: int = Field(ge=2)
    due_at: datetime
    # How many attempts before this one the endpoint answered with a Retry-After
    # that HAPP honoured as a pause: those do not count against the attempts.
    paused: int = Field(default=0, ge=0)
