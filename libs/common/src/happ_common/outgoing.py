"""The body of an outgoing reply (SPEC §4) and its signed headers."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from happ_common.channels import Channel
from happ_common.events import OutboundReply
from happ_common.signing import outgoing_headers


class OutgoingBody(BaseModel):
    to: str
    text: str
    channel_id: str
    metadata: dict[str, Any] | None
    message_id: str
    in_reply_to: str | None
    timestamp: int
    # Repeats of to/text and a constant, for integrations written against the
    # product page's other example.
    sender_id: str
    reply: str
    channel: Literal["custom_messenger"] = "custom_messenger"
    test: bool | None = None


def render(reply: OutboundReply, timestamp: int) -> bytes:
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
        test=True if reply.test else None,
    )
    # "test" appears only on test sends; metadata stays present (null) when none came.
    return body.model_dump_json(exclude=None if reply.test else {"test"}).encode()


def signed_headers(
    channel: Channel, reply_id: str, timestamp: int, attempt: int, body: bytes
) -> dict[str, str]:
    return outgoing_headers(
        current_secret=channel.hmac_secret,
        extra_secrets=channel.previous_secrets(),
        delivery_id=reply_id,
        timestamp=timestamp,
        attempt=attempt,
        body=body,
    )
