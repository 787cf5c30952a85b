"""An outgoing reply (SPEC §4): its body, its signed headers, and one attempt to send it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import aiohttp
from opentelemetry.trace import SpanKind
from pydantic import BaseModel, Field
from pydantic.json_schema import SkipJsonSchema

from happ_common import tracing
from happ_common.channels import Channel
from happ_common.custom_headers import masked
from happ_common.events import ASSISTANT, Attachment, AuthorType, OutboundEvent, OutboundReply
from happ_common.ids import new_log_id
from happ_common.request_log import MAX_REQUEST_BODY, LogEntry, cut
from happ_common.signing import outgoing_headers
from happ_common.urls import redacted_url
from happ_common.webhook_client import AttemptOutcome, post_signed


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


@dataclass(frozen=True)
class SentAttempt:
    outcome: AttemptOutcome
    log_entry: LogEntry


async def send_attempt(
    session: aiohttp.ClientSession,
    channel: Channel,
    reply: OutboundReply,
    attempt: int,
    *,
    timeout_s: float,
    allow_private: bool,
) -> SentAttempt:
    """One signed POST of a reply (or a test send) and its request-log entry.

    The delivery service and the admin's "Send test" both go through here, so a
    test is signed, sent, classified and logged exactly like a real delivery.
    """
    timestamp = int(time.time())
    body = render(reply, timestamp)
    # The channel's own headers first, HAPP's over them: the admin API refuses
    # a name of HAPP's, and should one be stored anyway, the signature wins.
    headers = {**channel.outgoing_headers}
    headers.update(signed_headers(channel, reply.reply_id, timestamp, attempt, body))
    with tracing.span(
        "POST",
        SpanKind.CLIENT,
        attributes={
            "http.request.method": "POST",
            "url.full": redacted_url(channel.outgoing_url),
            "happ.reply_id": reply.reply_id,
            "happ.attempt": attempt,
        },
    ):
        # Not signed (the signatures cover the body): the endpoint's tracing continues.
        headers.update(tracing.outgoing_headers())
        outcome = await post_signed(
            session,
            channel.outgoing_url,
            body,
            headers,
            timeout_s=timeout_s,
            allow_private=allow_private,
        )
    entry = LogEntry.model_construct(  # every field is ours: skip validation
        id=new_log_id(),
        channel_id=channel.id,
        direction="outgoing",
        created_at=datetime.now(UTC),
        method="POST",
        url=channel.outgoing_url,
        status_code=outcome.status_code,
        error_code=outcome.error_code,
        duration_ms=outcome.duration_ms,
        request_body=cut(body, MAX_REQUEST_BODY),
        response_body=outcome.response_body or outcome.error_message,
        message_id=reply.reply_id,
        attempt=attempt,
        # Names only: the values are credentials.
        outgoing_headers=masked(channel.outgoing_headers) or None,
    )
    return SentAttempt(outcome, entry)
