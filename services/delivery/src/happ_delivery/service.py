"""Delivering a reply: a small state machine per reply, each step recorded
before the next one starts (svix's worker is the shape):

1. **claim** the attempt: a retry's or a resend's state goes to ``sending``
   (attempt n) by compare-and-set. A reply's first attempt claims nothing: no
   state means never attempted, and its outcome is its first state
   (``repository.py``). A record met again (redelivered after a crash or a
   rebalance, or republished by the assistant) finds the state and resumes from
   it instead: ended → nothing to do; ``retrying`` with this attempt's outcome
   recorded → make sure the next retry is on the log; ``sending`` → the attempt
   was in flight at a crash, so it is sent again, with the same
   ``X-HAPP-Delivery-Id``; no state → a first attempt in flight at a crash (or
   never made), sent with the same id too. That is the only way a POST repeats.
2. **send**: one signed POST, after taking a sending slot (``slots.py``).
3. **record** the outcome, retried until it is stored: never by sending again.
4. **schedule**: a failed attempt with attempts left closes its conversation's
   gate (``gate.py``), is recorded ``retrying`` with its due time, then its
   ``delivery.retry`` event is published (retried until acknowledged); after
   the last attempt the reply is ``failed`` (resendable from the admin API).

Records that wait (at a closed gate, for a retry's due time, for a slot) are
``parked`` in the pipeline, off its in-flight budget. A wait cut short by the
partition's revocation raises ``Abandoned``: the record stays uncommitted and
the partition's next owner resumes it from the recorded state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import aiohttp
from prometheus_client import Counter, Gauge, Histogram

from happ_common.channels import Channel, ChannelCache
from happ_common.deliveries import SERIES_ENDED, DeliveryState, DeliveryStatus
from happ_common.endpoint_health import DISABLED_ERROR_CODE
from happ_common.events import DeliveryRetry, OutboundReply
from happ_common.ids import ConversationKey, conversation_key, output_ids_for
from happ_common.kafka import Publisher
from happ_common.outgoing import send_attempt
from happ_common.pipeline import Abandoned, parked
from happ_common.request_log import LogEntry, RequestLogWriter
from happ_common.topics import DELIVERY_RETRY
from happ_common.webhook_client import AttemptOutcome
from happ_delivery.gate import ConversationGates, ConversationMoved
from happ_delivery.health import EndpointHealth
from happ_delivery.pace import ChannelPauses, PartitionShare, RateCaps
from happ_delivery.repository import DeliveryRepository
from happ_delivery.settings import DeliverySettings
from happ_delivery.slots import SendSlots, SlotWaitExpired

log = logging.getLogger(__name__)

MIN_PAUSE_S = 1.0

ATTEMPTS = Counter("happ_delivery_attempts_total", "Delivery attempts by outcome", ["outcome"])
FINAL = Counter("happ_delivery_final_total", "Replies by final state", ["state"])
SKIPPED = Counter(
    "happ_delivery_skipped_total",
    "Records not sent because their work was already done",
    ["reason"],
)
RESUMED = Counter(
    "happ_delivery_resumed_total",
    "Records that resumed a reply's delivery from its recorded state",
    ["step"],
)
STEP_RETRIES = Counter(
    "happ_delivery_step_retries_total",
    "Retries of a step after a POST (recording its outcome, publishing its retry)",
    ["step"],
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
TYPING = Counter(
    "happ_delivery_typing_events_total",
    "Typing events: sent, failed (not retried) or dropped, and why",
    ["outcome"],
)
# A typing event older than this when its turn comes announces an answer that
# is most likely right behind it, or given up: sending it is noise.
TYPING_MAX_AGE_S = 30.0
GATED = Gauge("happ_delivery_conversations_waiting_for_retry", "Conversations held by a retry")

T = TypeVar("T")


def _key(reply: OutboundReply) -> ConversationKey:
    return (reply.channel_id, reply.to)


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
        health: EndpointHealth,
        partitions: int,
    ) -> None:
        self._settings = settings
        self._health = health
        self._allow_private = allow_private
        self._channels = channels
        self._repo = repository
        self._session = session
        self._publisher = publisher
        self._log = request_log
        self.pauses = ChannelPauses()
        self.share = PartitionShare(partitions)
        self._rates = RateCaps()
        self._slots = SendSlots(
            per_channel=settings.max_connections_per_channel,
            per_host=settings.max_connections_per_host,
            total=settings.max_connections,
        )
        self.gates = ConversationGates()
        # Set when a partition is revoked: wakes the retries sleeping in it, which
        # then leave the retry to the partition's new owner.
        self._revoked: dict[int, asyncio.Event] = {}
        # Per reply with a record being handled here: its lock and its users.
        self._replies: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    @property
    def max_attempts(self) -> int:
        return 1 + len(self._settings.retry_delays)

    async def deliver_new(self, reply: OutboundReply, partition: int) -> None:
        """A reply (or a resend), in its conversation's order."""
        channel = await self._channels.get(reply.channel_id)
        if channel is not None and not channel.posts_replies:
            # ``delivery: response``: the ingress hands the reply out (in the
            # webhook's response or GET /webhook/{id}/replies, both read from the
            # stored reply), so there is nothing to POST and no state to keep.
            # Only new replies: a retry series begun before the switch ends by
            # POSTing, or its gate would stay closed.
            SKIPPED.labels(reason="response_mode").inc()
            log.info("reply kept for the webhook's response (delivery: response), not POSTed")
            return
        try:
            async with parked():
                await self.gates.pass_through(_key(reply), reply.reply_id)
        except ConversationMoved:
            raise Abandoned(reply.reply_id) from None
        async with self._one_at_a_time(reply):
            if (
                not reply.resend
                and await self._repo.state(reply.channel_id, reply.reply_id) is None
            ):
                # Never attempted: sent without a claim (repository.py), its
                # outcome becoming its first state.
                await self._send_and_record(reply, 1, partition, pauses=0, claimed=False)
                return
            await self._resume(reply, 1, partition, pauses=0)

    async def deliver_typing(self, event: OutboundReply, partition: int) -> None:
        """A typing event: best-effort, and never after the reply it announces.

        It runs in its conversation's order like a reply, so the reply (published
        after it) waits for its one POST, bounded by twice ``typing_timeout_s``
        (for a sending slot, then for the answer). It
        claims no state, closes no gate and has no retry: dropped when a reply
        of the conversation is in a retry series (it would have to wait behind
        it), when the endpoint asked for a pause (Retry-After), when no sending
        slot is free within ``typing_timeout_s`` (the reply waits for it too),
        when the reply
        it announces has been met already (a redelivery after a crash), when it
        is too old to mean anything, or when the channel is disconnected; a
        failed POST is logged and that is all."""
        reason = await self._typing_drop_reason(event)
        if reason is not None:
            TYPING.labels(outcome=f"dropped_{reason}").inc()
            log.info("typing event dropped: %s", reason.replace("_", " "))
            return
        channel = await self._channels.get(event.channel_id)
        if (
            channel is None
            or channel.status != "connected"
            or channel.deliveries_disabled
            or not channel.posts_replies  # delivery: response has no endpoint to tell
        ):
            # Turned off automatically too: a failing endpoint gets no more requests.
            TYPING.labels(outcome="dropped_disconnected").inc()
            return
        if channel.outgoing_rate_per_second and not self._rates.due(channel.id):
            # A capped channel's turns are for replies; a late "typing…" is noise.
            # (Its replies waiting for their turn hold the channel's slots: a
            # typing event would only wait behind them to be dropped.)
            TYPING.labels(outcome="dropped_paced").inc()
            return
        timeout_s = min(self._settings.typing_timeout_s, self._settings.timeout_s)
        try:
            # The reply behind it waits for this slot too: a channel whose
            # connections are all busy gets no late "typing…".
            async with self._paced(
                channel, partition, turn_taken=True, max_wait_s=timeout_s
            ) as unchanged:
                if self.gates.closed_by(_key(event)) is not None:
                    # Closed while this waited for a slot (a retry restored it).
                    TYPING.labels(outcome="dropped_behind_retry").inc()
                    return
                if not unchanged:
                    TYPING.labels(outcome="dropped_disconnected").inc()
                    return
                # Taken once the slot is held, so a typing event dropped for
                # want of a slot costs the replies no turn.
                if channel.outgoing_rate_per_second and not self._rates.free_now(
                    channel.id, self._rate(channel)
                ):
                    # A capped channel's turns are for replies; a late "typing…" is noise.
                    TYPING.labels(outcome="dropped_paced").inc()
                    return
                sent = await send_attempt(
                    self._session,
                    channel,
                    event,
                    1,
                    timeout_s=timeout_s,
                    allow_private=self._allow_private,
                )
        except SlotWaitExpired:
            TYPING.labels(outcome="dropped_busy").inc()
            log.info("typing event dropped: no sending slot free within %.1f s", timeout_s)
            return
        self._log.add(sent.log_entry)
        outcome = sent.outcome
        TYPING.labels(outcome="sent" if outcome.ok else "failed").inc()
        log.info(
            "typing event %s: HTTP %s in %.0f ms (not retried)",
            "sent" if outcome.ok else "failed",
            outcome.status_code or outcome.error_code,
            outcome.duration_ms,
        )

    async def _typing_drop_reason(self, event: OutboundReply) -> str | None:
        if self.gates.closed_by(_key(event)) is not None:
            return "behind_retry"
        if self.pauses.remaining(event.channel_id) > 0:
            return "paused"  # the endpoint asked for quiet: a late "typing…" means nothing
        created = event.created_at
        if created.tzinfo is None:
            created = created.replace(tzinfo=UTC)
        age = (datetime.now(UTC) - created).total_seconds()
        if age > TYPING_MAX_AGE_S:
            return "stale"
        if event.in_reply_to is not None:
            announced = output_ids_for(event.channel_id, event.in_reply_to)
            try:
                states = await asyncio.gather(
                    *(self._repo.state(event.channel_id, i) for i in announced)
                )
            except Exception as exc:
                # Best-effort: an outage costs the typing event, it does not
                # hold the conversation (the reply behind it waits it out).
                log.warning("typing event: its reply's state is unreadable: %s", exc)
                return "state_unreadable"
            if any(s is not None for s in states):
                return "reply_sent"
        return None

    async def deliver_retry(self, retry: DeliveryRetry, partition: int) -> None:
        reply = retry.reply
        wait = (retry.due_at - datetime.now(UTC)).total_seconds()
        if wait > 0:
            revoked = self._revoked.setdefault(partition, asyncio.Event())
            async with parked():
                try:
                    await asyncio.wait_for(revoked.wait(), wait)
                except TimeoutError:
                    pass  # due: go on
                else:
                    raise Abandoned(reply.reply_id)
        # The state is read now, after the wait: a resend or a cancel may have
        # happened meanwhile.
        async with self._one_at_a_time(reply):
            await self._resume(reply, retry.attempt, partition, pauses=retry.paused)

    @contextlib.asynccontextmanager
    async def _one_at_a_time(self, reply: OutboundReply) -> AsyncIterator[None]:
        """One record of a reply at a time in this process. Records of one reply
        (a republished copy, a retry and its duplicate) are keyed apart in the
        pipeline, so they may run together; each must see the state the other
        left, never take another's live claim for a crashed attempt, and never
        be skipped as done while the other may still fail (waiting, parked)."""
        entry = self._replies.get(reply.reply_id)
        if entry is None:
            entry = self._replies[reply.reply_id] = (asyncio.Lock(), [0])
        lock, users = entry
        users[0] += 1
        try:
            async with parked():
                await lock.acquire()
            try:
                yield
            finally:
                lock.release()
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._replies[reply.reply_id]

    async def _resume(
        self, reply: OutboundReply, attempt: int, partition: int, *, pauses: int
    ) -> None:
        """Go on from the reply's recorded state with ``attempt``, whichever
        record (first, retry, resend, duplicate) brought it here. A record is
        only ever skipped when the state shows its step done, or when the record
        that will do it is still on the log (uncommitted). ``pauses``: the
        record's count of earlier attempts that did not count (Retry-After)."""
        while True:
            state = await self._repo.state(reply.channel_id, reply.reply_id)
            if state is None:
                if await self._repo.claim_missing(reply.channel_id, reply.reply_id, attempt):
                    break
                continue
            if state.status in SERIES_ENDED:
                SKIPPED.labels(reason=f"already_{state.status}").inc()
                self._open(reply)
                return
            if self._may_claim(state, attempt):
                if await self._repo.claim_next(reply.channel_id, reply.reply_id, state, attempt):
                    # The state's count, not the record's: a record of an
                    # earlier series (before a resend) may carry another.
                    pauses = state.pauses
                    break
                continue  # someone else moved it: read again
            if state.status == "retrying" and state.attempts >= attempt:
                # Attempt ``state.attempts`` failed and was recorded; its retry
                # may not have reached the log (a crash in between). Any record
                # of the reply puts it there: a duplicate is harmless, since a
                # retry claims its attempt by compare-and-set.
                RESUMED.labels(step="schedule").inc()
                self.gates.close(_key(reply), reply.reply_id, partition)
                due = state.next_attempt_at or datetime.now(UTC)
                await self._publish_retry(reply, state.attempts + 1, due, state.pauses)
                return
            if state.status == "sending" and state.attempts == attempt:
                # In flight when its sender died: the one POST that may repeat.
                RESUMED.labels(step="send").inc()
                if attempt > 1:
                    self.gates.close(_key(reply), reply.reply_id, partition)
                await self._send_and_record(reply, attempt, partition, pauses=state.pauses)
                return
            # Another attempt is claimed ("sending": its own record, uncommitted
            # until it is done, will resume it) or the record is older than the
            # state (a stale retry of an earlier series).
            SKIPPED.labels(reason=f"stale_{state.status}").inc()
            log.info(
                "reply %s: record for attempt %d is behind its state %s/%d; skipped",
                reply.reply_id,
                attempt,
                state.status,
                state.attempts,
            )
            return
        if attempt > 1:
            # Keep the gate closed across a restart: the reply is mid-series.
            self.gates.close(_key(reply), reply.reply_id, partition)
        await self._send_and_record(reply, attempt, partition, pauses=pauses)

    @staticmethod
    def _may_claim(state: DeliveryState, attempt: int) -> bool:
        if attempt == 1:
            return state.status == "pending" and state.attempts == 0  # a resend's claim
        return state.status == "retrying" and state.attempts == attempt - 1

    async def _send_and_record(
        self,
        reply: OutboundReply,
        attempt: int,
        partition: int,
        *,
        pauses: int,
        claimed: bool = True,
    ) -> None:
        """Send the claimed ``attempt`` and record what came of it. Of the
        attempts before it, ``pauses`` were answered with a Retry-After honoured
        as a pause, and do not count against ``max_attempts``."""
        while True:
            # The channel is read (connected? where to?) after a pause, not
            # before one that may last minutes; and read again if it changed (or
            # a pause began) while this waited for its turn and its slot.
            await self.pauses.wait(
                reply.channel_id, self._revoked.setdefault(partition, asyncio.Event())
            )
            channel = await self._channels.get(reply.channel_id)
            if channel is None or channel.status != "connected" or channel.deliveries_disabled:
                # Ending a series unsent is final: make sure with the database, not
                # the cache (a resend right after a reconnect must go out).
                channel = await self._channels.get(reply.channel_id, fresh=True)
            if channel is None or channel.status != "connected":
                await self._record(reply, "canceled", attempt, pauses=pauses, claimed=claimed)
                FINAL.labels(state="canceled").inc()
                log.info("reply canceled: the channel is disconnected or gone")
                self._open(reply)
                return
            if channel.deliveries_disabled is not None:
                # Kept as failed, not canceled: a bulk recovery re-sends failed
                # replies once the endpoint is fixed and the channel connected.
                await self._record(
                    reply,
                    "failed",
                    attempt,
                    error_code=DISABLED_ERROR_CODE,
                    pauses=pauses,
                    claimed=claimed,
                )
                FINAL.labels(state="failed").inc()
                log.info("reply not sent: the channel's deliveries are turned off")
                self._open(reply)
                return
            async with self._paced(channel, partition) as unchanged:
                if unchanged:
                    sent = await send_attempt(
                        self._session,
                        channel,
                        reply,
                        attempt,
                        timeout_s=self._settings.timeout_s,
                        allow_private=self._allow_private,
                    )
                    break
        # From here on the POST happened: nothing below may raise into the
        # pipeline's retry (it would send again); each step retries itself.
        outcome = sent.outcome
        # A first attempt's entry is kept with its first state (one document
        # instead of two, happ_common.deliveries); any other goes to the log.
        logged = None if claimed else sent.log_entry
        if logged is None:
            self._log.add(sent.log_entry)
        ATTEMPTS.labels(outcome="ok" if outcome.ok else (outcome.error_code or "error")).inc()
        ATTEMPT_TIME.observe(outcome.duration_ms / 1000)
        if outcome.ok:
            await self._record(
                reply, "delivered", attempt, outcome, pauses=pauses, claimed=claimed, logged=logged
            )
            FINAL.labels(state="delivered").inc()
            log.info(
                "reply delivered: attempt %d, HTTP %s in %.0f ms",
                attempt,
                outcome.status_code,
                outcome.duration_ms,
            )
            END_TO_END.observe(max(0.0, (datetime.now(UTC) - reply.created_at).total_seconds()))
            self._open(reply)
        elif (wait := self._pause_asked(channel.id, outcome)) is not None and (
            pauses < self._settings.max_pauses
        ):
            # The endpoint asked for time: this attempt does not count, and the
            # next comes once the pause is over.
            due = datetime.now(UTC) + timedelta(seconds=wait)
            await self._schedule(
                reply,
                attempt,
                partition=partition,
                outcome=outcome,
                due=due,
                pauses=pauses + 1,
                claimed=claimed,
                logged=logged,
            )
            log.info(
                "reply attempt %d: the endpoint asked to wait %g s (HTTP %s); the channel "
                "is paused and the attempt not counted; attempt %d due at %s",
                attempt,
                wait,
                outcome.status_code,
                attempt + 1,
                due.isoformat(timespec="seconds"),
            )
        elif attempt - pauses < self.max_attempts:
            delay = self._settings.retry_delays[attempt - pauses - 1]
            due = datetime.now(UTC) + timedelta(seconds=max(delay, wait or 0.0))
            await self._schedule(
                reply,
                attempt,
                partition=partition,
                outcome=outcome,
                due=due,
                pauses=pauses,
                claimed=claimed,
                logged=logged,
            )
            log.info(
                "reply attempt %d failed (%s); attempt %d due at %s",
                attempt,
                outcome.error_code,
                attempt + 1,
                due.isoformat(timespec="seconds"),
            )
        else:
            await self._record(
                reply, "failed", attempt, outcome, pauses=pauses, claimed=claimed, logged=logged
            )
            FINAL.labels(state="failed").inc()
            log.warning(
                "reply %s to %s failed after %d attempts: %s",
                reply.reply_id,
                channel.outgoing_url,
                attempt,
                outcome.error_code,
            )
            self._open(reply)
        await self._note_health(channel, outcome)

    def _rate(self, channel: Channel) -> float:
        return channel.outgoing_rate_per_second * self.share.fraction

    @contextlib.asynccontextmanager
    async def _paced(
        self,
        channel: Channel,
        partition: int,
        *,
        turn_taken: bool = False,
        max_wait_s: float | None = None,
    ) -> AsyncIterator[bool]:
        """Holds a sending slot for one POST to the channel's endpoint, taken
        within the channel's caps (this member's share of them); yields whether
        the channel is still as read and not paused once the slot is held (the
        wait for it may have been long)."""
        paced = None
        if channel.outgoing_rate_per_second and not turn_taken:
            revoked = self._revoked.setdefault(partition, asyncio.Event())
            rate = self._rate(channel)

            async def paced() -> None:
                await self._rates.take(channel.id, rate, revoked)

        limit = None
        if channel.outgoing_max_concurrency:
            limit = min(
                self._slots.per_channel, self.share.of_count(channel.outgoing_max_concurrency)
            )
        async with self._slots.hold(channel.id, channel.outgoing_url, limit, paced, max_wait_s):
            current = await self._channels.get(channel.id)
            yield (
                current is not None
                and current.updated_at == channel.updated_at
                and current.outgoing_url == channel.outgoing_url
                and self.pauses.remaining(channel.id) <= 0
            )

    def _pause_asked(self, channel_id: str, outcome: AttemptOutcome) -> float | None:
        """The pause an endpoint's Retry-After asked for, capped, now in force for
        its channel; None when it asked for none."""
        if outcome.retry_after_s is None:
            return None
        # At least a second: "Retry-After: 0" would otherwise be a free attempt
        # repeated at once.
        wait = max(MIN_PAUSE_S, min(outcome.retry_after_s, self._settings.max_retry_after_s))
        self.pauses.pause(channel_id, wait)
        return wait

    async def _schedule(
        self,
        reply: OutboundReply,
        attempt: int,
        *,
        partition: int,
        outcome: AttemptOutcome,
        due: datetime,
        pauses: int,
        claimed: bool,
        logged: LogEntry | None,
    ) -> None:
        """Record ``attempt`` as failed with its next one due at ``due``, and put
        that one on the retry topic."""
        # Close the gate before this handler returns: the conversation's next
        # reply is handled right after it and must find the gate closed.
        self.gates.close(_key(reply), reply.reply_id, partition)
        GATED.set(len(self.gates))
        await self._record(
            reply,
            "retrying",
            attempt,
            outcome,
            partition=partition,
            next_attempt_at=due,
            pauses=pauses,
            claimed=claimed,
            logged=logged,
        )
        await self._publish_retry(reply, attempt + 1, due, pauses)

    async def _note_health(self, channel: Channel, outcome: AttemptOutcome) -> None:
        # Best effort, after everything the reply needs is recorded: a write
        # that fails here is made by the next attempt's outcome instead.
        try:
            if outcome.ok:
                await self._health.succeeded(channel)
            elif await self._health.failed(channel, outcome.error_code):
                self._channels.invalidate(channel.id)
        except Exception as exc:
            log.warning("channel %s: endpoint health not recorded: %s", channel.id, exc)

    async def _record(
        self,
        reply: OutboundReply,
        status: DeliveryStatus,
        attempt: int,
        outcome: AttemptOutcome | None = None,
        *,
        partition: int | None = None,
        next_attempt_at: datetime | None = None,
        error_code: str | None = None,
        pauses: int = 0,
        claimed: bool = True,
        logged: LogEntry | None = None,
    ) -> None:
        """``logged``: the request-log entry of a first attempt sent without a
        claim, kept with the state it records, or logged if another's state won.
        Cut off meanwhile (a revocation, shutdown), the state's insert still goes
        with its batch (the repository is drained at shutdown), entry and all."""
        kept = await self._until_done(
            "record",
            lambda: self._repo.record(
                reply.channel_id,
                reply.reply_id,
                status,
                attempt=attempt,
                outcome=outcome,
                error_code=error_code,
                sender_id=reply.to,
                partition=partition,
                next_attempt_at=next_attempt_at,
                pauses=pauses,
                claimed=claimed,
                attempt_log=logged,
            ),
        )
        if logged is not None and not kept:
            self._log.add(logged)

    async def _publish_retry(
        self, reply: OutboundReply, attempt: int, due: datetime, pauses: int
    ) -> None:
        # Duplicates are harmless: the retry claims its attempt with a
        # compare-and-set, so a second copy finds it taken.
        await self._until_done(
            "publish_retry",
            lambda: self._publisher.publish(
                DELIVERY_RETRY,
                DeliveryRetry(
                    reply=reply.model_copy(update={"resend": False}),
                    attempt=attempt,
                    due_at=due,
                    paused=pauses,
                ),
                key=conversation_key(reply.channel_id, reply.to),
            ),
        )

    async def _until_done(self, step: str, action: Callable[[], Awaitable[T]]) -> T:
        """Run a step that follows a POST until it succeeds (an outage lasts as
        long as it lasts). Cancellation (a revocation's cut-off, shutdown) leaves
        the recorded state where it was, and the next owner resumes from it."""
        failures = 0
        while True:
            try:
                return await action()
            except Exception as exc:
                failures += 1
                STEP_RETRIES.labels(step=step).inc()
                log.warning("%s failed (failure %d), retrying: %s", step, failures, exc)
                await asyncio.sleep(min(0.2 * 2**failures, 10.0))

    def _open(self, reply: OutboundReply) -> None:
        self.gates.open(_key(reply), reply.reply_id)
        GATED.set(len(self.gates))

    async def restore_gates(self, partitions: set[int]) -> None:
        """Close the gates of conversations whose retries were pending in these
        partitions when their previous owner stopped. What this member knew of
        them before is dropped first: a gate closed by a handler during an
        earlier revocation's grace period would otherwise outlive its series."""
        self.share.assigned(partitions)
        pending = await self._repo.pending_retries(partitions)
        self.gates.forget_partitions(partitions)
        for r in pending:
            self.gates.close((r.channel_id, r.sender_id), r.reply_id, r.partition)
        GATED.set(len(self.gates))

    def forget(self, partitions: set[int]) -> None:
        self.share.revoked(partitions)
        self._rates.forget()
        self.gates.forget_partitions(partitions)
        for p in partitions:
            event = self._revoked.pop(p, None)
            if event is not None:
                event.set()
        GATED.set(len(self.gates))
