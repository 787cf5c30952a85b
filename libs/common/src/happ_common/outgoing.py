"""One attempt to send an outgoing reply (SPEC §4): its body (``outgoing_body``), its
signed headers, the POST and its request-log entry."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
from opentelemetry.trace import SpanKind

from happ_common import tracing
from happ_common.channels import Channel
from happ_common.custom_headers import masked
from happ_common.events import OutboundReply
from happ_common.ids import new_log_id
from happ_common.outgoing_body import render
from happ_common.request_log import MAX_REQUEST_BODY, LogEntry, cut
from happ_common.signing import outgoing_headers
from happ_common.urls import redacted_url
from happ_common.webhook_client import AttemptOutcome, post_signed


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
