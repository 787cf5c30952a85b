"""Delivering a reply: sign, POST, record the attempt, schedule the next one.

Shaped like svix's worker: sign the body, make the call, handle the failure,
compute the next delay. A failed attempt with attempts left becomes a
``delivery.retry`` event due ``retry_delays[attempt-1]`` seconds later and
closes its conversation's gate (``gate.py``) until the series ends; after the
last attempt the reply is ``failed`` (resendable from the admin API).

Every effect is recorded before the record's offset can be committed, and a
record met again after a crash is recognised from the reply's stored state, so
only attempts in flight at a crash are ever repeated (same ``X-HAPP-Delivery-Id``).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import aiohttp
from prometheus_client import Counter, Gauge, Histogram

from happ_common.channels import ChannelCache
from happ_common.deliveries import SERIES_ENDED, DeliveryStatus
from happ_common.events import DeliveryRetry, OutboundReply
from happ_common.ids import conversation_key
from happ_common.kafka import Publisher
from happ_common.outgoing import send_attempt
from happ_common.request_log import RequestLogWriter
from happ_common.topics import DELIVERY_RETRY
from happ_common.webhook_client import AttemptOutcome
from happ_delivery.gate import ConversationGates, ConversationKey, ConversationMoved
from happ_delivery.repository import DeliveryRepository
from happ_delivery.settings import DeliverySettings

log = logging.getLogger(__name__)

ATTEMPTS = Counter("happ_delivery_attempts_total", "Delivery attempts by outcome", ["outcome"])
FINAL = Counter("happ_delivery_final_total", "Replies by final state", ["state"])
SKIPPED = Counter(
    "happ_delivery_skipped_total",
    "Records not sent because their work was already done",
    ["reason"],
)
ATTEMPT_TIME = Histogram(
    "happ_delivery_attempt_seconds",
    "Duration of one delivery attempt",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15),
)
END_TO_END = Histogram(
    "happ_delivery_reply_age_seconds",
    "From the reply's creation to its successful delivery",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
GATED = Gauge("happ_delivery_conversations_waiting_for_retry", "Conversations held by a retry")


def _key(reply: OutboundReply) -> ConversationKey:
    return (reply.channel_id, reply.to)


def _first(reply: OutboundReply, attempt: int) -> bool:
    """The reply's very first outcome: its state is inserted, not updated."""
    return attempt == 1 and not reply.resend


class DeliveryService:
    def __init__(
        self,
        *,
        settings: DeliverySettings,
        allow_private: bool,
        channels: ChannelCache,
        repository: DeliveryRepository,
        session: aiohttp.ClientSession,
        publisher: Publisher,
        request_log: RequestLogWriter,
    ) -> None:
        self._settings = settings
        self._allow_private = allow_private
        self._channels = channels
        self._repo = repository
        self._session = session
        self._publisher = publisher
        self._log = request_log
        self.gates = ConversationGates()
        # Set when a partition is revoked: wakes the retries sleeping in it, which
        # then leave the retry to the partition's new owner.
        self._revoked: dict[int, asyncio.Event] = {}
        # Replies whose "retrying" state is being written, by reply id.
        self._recording: dict[str, asyncio.Future[None]] = {}

    @property
    def max_attempts(self) -> int:
        return 1 + len(self._settings.retry_delays)

    async def deliver_new(self, reply: OutboundReply, partition: int, may_be_replay: bool) -> None:
        """First attempt of a reply (or of a resend), in its conversation's order.

        ``may_be_replay``: the record was on the log before this member took its
        partition, so an earlier owner may have sent it already; only then is the
        stored state read (the pipeline knows; see ``KeyedPipeline.may_be_replay``).
        """
        try:
            await self.gates.pass_through(_key(reply), reply.reply_id)
        except ConversationMoved:
            SKIPPED.labels(reason="partition_moved").inc()
            return
        if may_be_replay and not reply.resend:
            state = await self._repo.state(reply.channel_id, reply.reply_id)
            # Met again after a crash or rebalance: its series already ran or runs.
            if state.status in (*SERIES_ENDED, "retrying"):
                SKIPPED.labels(reason=f"already_{state.status}").inc()
                return
        await self.attempt(reply, 1, partition)

    async def deliver_retry(self, retry: DeliveryRetry, partition: int) -> None:
        reply = retry.reply
        previous = self._recording.get(reply.reply_id)
        if previous is not None:
            await previous  # the failed attempt's own record (see attempt)
        state = await self._repo.state(reply.channel_id, reply.reply_id)
        if state.status in SERIES_ENDED or state.attempts >= retry.attempt:
            SKIPPED.labels(reason="retry_already_done").inc()
            self._open(reply)
            return
        # Keep the gate closed across a restart: the state said "retrying".
        self.gates.close(_key(reply), reply.reply_id, partition)
        wait = (retry.due_at - datetime.now(UTC)).total_seconds()
        if wait > 0:
            revoked = self._revoked.setdefault(partition, asyncio.Event())
            try:
                await asyncio.wait_for(revoked.wait(), wait)
            except TimeoutError:
                pass  # due: go on
            else:
                SKIPPED.labels(reason="partition_moved").inc()
                return
        await self.attempt(reply, retry.attempt, partition)

    async def attempt(self, reply: OutboundReply, attempt: int, partition: int) -> None:
        channel = await self._channels.get(reply.channel_id)
        if channel is None or channel.status != "connected":
            # Canceling is final: make sure with the database, not the cache (a
            # resend right after a reconnect must not be canceled).
            channel = await self._channels.get(reply.channel_id, fresh=True)
        if channel is None or channel.status != "connected":
            await self._repo.record(
                reply.channel_id, reply.reply_id, "canceled", first=_first(reply, attempt)
            )
            FINAL.labels(state="canceled").inc()
            self._open(reply)
            return
        sent = await send_attempt(
            self._session,
            channel,
            reply,
            attempt,
            timeout_s=self._settings.timeout_s,
            allow_private=self._allow_private,
        )
        outcome = sent.outcome
        self._log.add(sent.log_entry)
        ATTEMPTS.labels(outcome="ok" if outcome.ok else (outcome.error_code or "error")).inc()
        ATTEMPT_TIME.observe(outcome.duration_ms / 1000)
        if outcome.ok:
            await self._record_attempt(reply, "delivered", attempt, outcome)
            FINAL.labels(state="delivered").inc()
            END_TO_END.observe(max(0.0, (datetime.now(UTC) - reply.created_at).total_seconds()))
            self._open(reply)
        elif attempt < self.max_attempts:
            due = datetime.now(UTC) + timedelta(seconds=self._settings.retry_delays[attempt - 1])
            # Close the gate before this handler returns: the conversation's next
            # reply is handled right after it and must find the gate closed.
            self.gates.close(_key(reply), reply.reply_id, partition)
            GATED.set(len(self.gates))
            # The retry is published before "retrying" is recorded (a crash in
            # between must not leave a reply marked retrying with no retry on the
            # log), so its handler may start first: it waits for this record
            # (deliver_retry), and the next outcome never lands before it.
            recorded = asyncio.get_running_loop().create_future()
            self._recording[reply.reply_id] = recorded
            try:
                await self._publisher.publish(
                    DELIVERY_RETRY,
                    DeliveryRetry(reply=reply, attempt=attempt + 1, due_at=due),
                    key=conversation_key(reply.channel_id, reply.to),
                )
                await self._record_attempt(
                    reply, "retrying", attempt, outcome, partition=partition, next_attempt_at=due
                )
            finally:
                recorded.set_result(None)
                if self._recording.get(reply.reply_id) is recorded:
                    del self._recording[reply.reply_id]
        else:
            await self._record_attempt(reply, "failed", attempt, outcome)
            FINAL.labels(state="failed").inc()
            log.warning(
                "reply %s to %s failed after %d attempts: %s",
                reply.reply_id,
                channel.outgoing_url,
                attempt,
                outcome.error_code,
            )
            self._open(reply)

    async def _record_attempt(
        self,
        reply: OutboundReply,
        status: DeliveryStatus,
        attempt: int,
        outcome: AttemptOutcome,
        *,
        partition: int | None = None,
        next_attempt_at: datetime | None = None,
    ) -> None:
        await self._repo.record(
            reply.channel_id,
            reply.reply_id,
            status,
            attempt=attempt,
            outcome=outcome,
            sender_id=reply.to,
            partition=partition,
            next_attempt_at=next_attempt_at,
            first=_first(reply, attempt),
        )

    def _open(self, reply: OutboundReply) -> None:
        self.gates.open(_key(reply), reply.reply_id)
        GATED.set(len(self.gates))

    async def restore_gates(self, partitions: set[int]) -> None:
        """Close the gates of conversations whose retries were pending in these
        partitions when their previous owner stopped."""
        for r in await self._repo.pending_retries(partitions):
            self.gates.close((r.channel_id, r.sender_id), r.reply_id, r.partition)
        GATED.set(len(self.gates))

    def forget(self, partitions: set[int]) -> None:
        self.gates.forget_partitions(partitions)
        for p in partitions:
            event = self._revoked.pop(p, None)
            if event is not None:
                event.set()
        GATED.set(len(self.gates))
