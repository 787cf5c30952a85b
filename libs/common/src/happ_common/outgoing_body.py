"""The body of an outgoing reply (SPEC §4), as signed and sent.

Apart from the POST (``happ_common.outgoing``): the ingress renders the same
body for replies returned in the webhook's response and documents it in its
OpenAPI, without the HTTP client the POST needs.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field
from pydantic.json_schema import SkipJsonSchema

from happ_common.events import ASSISTANT, Attachment, AuthorType, OutboundEvent, OutboundReply


class OutgoingAuthor(BaseModel):
    type: AuthorType = Field(description="Who wrote the reply.")
    name: str = Field(description="Their display name ('Assistant' for the AI).")


class OutgoingBody(BaseModel):
    """The body of an outgoing reply (SPEC §4), signed as sent."""

    to: str = Field(description="The user's `sender_id` from the incoming message.")
    text: str = Field(description="The reply's text.")
    channel_id: str
    metadata: dict[str, Any] | None = Field(
        description="The incoming message's `metadata`, exactly; null when none came."
    )
    message_id: str = Field(
        description="This reply's id, the same on every attempt (`X-HAPP-Delivery-Id`)."
    )
    in_reply_to: str | None = Field(
        description="The `message_id` of the incoming message answered; null when the reply "
        "answers no particular message (a test send, for one)."
    )
    timestamp: int = Field(
        description="Unix seconds when this attempt was signed: reject old ones to stop replays."
    )
    # Repeats of to/text and a constant, for integrations written against the
    # product page's other example.
    sender_id: str = Field(description="The same as `to`.")
    reply: str = Field(description="The same as `text`.")
    channel: Literal["custom_messenger"] = "custom_messenger"
    # SPEC §6a: who wrote it; ``event`` only on notices about the conversation
    # (a handoff to a person, a hand-back, a close) and on typing events,
    # ``attachments`` only when an operator sent some. Absent rather than null
    # when they say nothing.
    author: OutgoingAuthor
    event: OutboundEvent | SkipJsonSchema[None] = Field(
        default=None,
        description="Only on a notice about the conversation: `handoff` (to a person; `text` is "
        "the channel's handoff text), `operator_joined`, `hand_back` or `closed`; and `typing` "
        "on a typing event (channels with `typing_events`).",
    )
    attachments: list[Attachment] | SkipJsonSchema[None] = Field(
        default=None, description="Only when an operator attached something."
    )
    test: bool | SkipJsonSchema[None] = Field(
        default=None, description="`true` on a test send from the admin API; absent otherwise."
    )


def render(reply: OutboundReply, timestamp: int) -> bytes:
    author = reply.author or ASSISTANT
    body = OutgoingBody(
        to=reply.to,
        text=reply.text,
        channel_id=reply.channel_id,
        metadata=reply.metadata,
        message_id=reply.reply_id,
        in_reply_to=reply.in_reply_to,
        timestamp=timestamp,
        sender_id=reply.to,
        reply=reply.text,
        author=OutgoingAuthor(type=author.type, name=author.name),
        event=reply.event,
        attachments=reply.attachments or None,
        test=True if reply.test else None,
    )
    # "test", "event" and "attachments" appear only when they say something;
    # metadata stays present (null) when none came.
    absent = {k for k in ("test", "event", "attachments") if getattr(body, k) is None}
    return body.model_dump_json(exclude=absent, exclude_none=False).encode()
