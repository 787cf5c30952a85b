"""Delivering a reply: sign, POST, record the attempt, schedule the next one.

Shaped like svix's worker: sign the body, make the call, handle the failure,
compute the next delay. A failed attempt with attempts left becomes a
``delivery.retry`` event due ``retry_delays[attempt-1]`` seconds later; after
the last one the reply is ``failed`` (resendable from the admin API).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta

import aiohttp
from prometheus_client import Counter, Histogram

from happ_common.channels import ChannelCache
from happ_common.events import DeliveryRetry, OutboundReply
from happ_common.ids import conversation_key, new_log_id
from happ_common.kafka import EventPublisher
from happ_common.messages import MessageStatus
from happ_common.outgoing import render, signed_headers
from happ_common.request_log import MAX_REQUEST_BODY, LogEntry, RequestLogWriter, cut
from happ_common.topics import DELIVERY_RETRY
from happ_common.webhook_client import AttemptOutcome, post_signed
from happ_delivery.repository import DeliveryRepository
from happ_delivery.settings import DeliverySettings

log = logging.getLogger(__name__)

ATTEMPTS = Counter("happ_delivery_attempts_total", "Delivery attempts by outcome", ["outcome"])
FINAL = Counter("happ_delivery_final_total", "Replies by final state", ["state"])
ATTEMPT_TIME = Histogram(
    "happ_delivery_attempt_seconds",
    "Duration of one delivery attempt",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15),
)

DONE_STATES = ("delivered", "failed", "canceled")


class DeliveryService:
    def __init__(
        self,
        *,
        settings: DeliverySettings,
        allow_private: bool,
        channels: ChannelCache,
        repository: DeliveryRepository,
        session: aiohttp.ClientSession,
        publisher: EventPublisher,
        request_log: RequestLogWriter,
    ) -> None:
        self._settings = settings
        self._allow_private = allow_private
        self._channels = channels
        self._repo = repository
        self._session = session
        self._publisher = publisher
        self._log = request_log

    @property
    def max_attempts(self) -> int:
        return 1 + len(self._settings.retry_delays)

    async def deliver_new(self, reply: OutboundReply) -> None:
        # A redelivered record of a reply whose series already ended is not sent
        # again, unless an operator asked for a resend.
        if not reply.resend and (
            await self._repo.status(reply.channel_id, reply.reply_id) in DONE_STATES
        ):
            return
        await self.attempt(reply, 1)

    async def deliver_retry(self, retry: DeliveryRetry) -> None:
        wait = (retry.due_at - datetime.now(UTC)).total_seconds()
        if wait > 0:
            await asyncio.sleep(wait)
        await self.attempt(retry.reply, retry.attempt)

    async def attempt(self, reply: OutboundReply, attempt: int) -> None:
        channel = await self._channels.get(reply.channel_id)
        if channel is None or channel.status != "connected":
            await self._repo.mark(reply.channel_id, reply.reply_id, "canceled")
            FINAL.labels(state="canceled").inc()
            return
        timestamp = int(time.time())
        body = render(reply, timestamp)
        headers = signed_headers(channel, reply.reply_id, timestamp, attempt, body)
        outcome = await post_signed(
            self._session,
            channel.outgoing_url,
            body,
            headers,
            timeout_s=self._settings.timeout_s,
            allow_private=self._allow_private,
        )
        ATTEMPTS.labels(outcome="ok" if outcome.ok else (outcome.error_code or "error")).inc()
        ATTEMPT_TIME.observe(outcome.duration_ms / 1000)
        self._record(reply, channel.outgoing_url, attempt, body, outcome)
        state: MessageStatus
        if outcome.ok:
            state = "delivered"
        elif attempt < self.max_attempts:
            state = "retrying"
            delay = self._settings.retry_delays[attempt - 1]
            await self._publisher.publish(
                DELIVERY_RETRY,
                DeliveryRetry(
                    reply=reply,
                    attempt=attempt + 1,
                    due_at=datetime.now(UTC) + timedelta(seconds=delay),
                ),
                key=conversation_key(reply.channel_id, reply.to),
            )
        else:
            state = "failed"
        if state != "retrying":
            FINAL.labels(state=state).inc()
        await self._repo.record_attempt(
            reply.channel_id,
            reply.reply_id,
            state,
            attempt=attempt,
            status_code=outcome.status_code,
            error_code=outcome.error_code,
        )

    def _record(
        self, reply: OutboundReply, url: str, attempt: int, body: bytes, outcome: AttemptOutcome
    ) -> None:
        self._log.add(
            LogEntry(
                id=new_log_id(),
                channel_id=reply.channel_id,
                direction="outgoing",
                created_at=datetime.now(UTC),
                method="POST",
                url=url,
                status_code=outcome.status_code,
                error_code=outcome.error_code,
                duration_ms=outcome.duration_ms,
                request_body=cut(body, MAX_REQUEST_BODY),
                response_body=outcome.response_body or outcome.error_message,
                message_id=reply.reply_id,
                attempt=attempt,
            )
        )
