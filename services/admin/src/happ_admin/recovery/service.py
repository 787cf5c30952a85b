"""Bulk recovery: send again every reply of a channel that ended ``failed``
since a point in time, in each conversation's order (issue #13).

A request takes the channel's lock (one recovery at a time: two running side
by side could publish a conversation's replies out of order), records the
recovery and scans in the background, conversation by conversation, each one
oldest first, a page at a time: nothing unbounded is held in memory. Each
failed reply goes through ``ReplyResender.requeue``, the resend's own claim
(failed → pending) and publish on the conversation's key, so a reply already
pending or delivered (sent by an earlier recovery, a resend) is not queued
again, and asking again is safe: a request while one runs answers the running
one; one after it, or after its admin process died, queues what is failed by
then, and what the dead one claimed without queuing (a stranded claim,
happ_common.deliveries). A claim merely waiting its turn for longer than that
may be queued twice: the second event finds its series begun and is skipped.

Progress is read, not counted: the replies a recovery queued are listed
(``recovery_items``) and their delivery states are read when asked for, at most
every couple of seconds per recovery on one admin replica, and once for all
when nothing it queued is pending any more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from typing import TypeVar

from pymongo.errors import ConnectionFailure

from happ_admin.channels.service import ChannelService
from happ_admin.conversations.resend import ReplyResender, require_sendable
from happ_admin.cursors import Keyset
from happ_admin.errors import RECOVERY_IN_PROGRESS, RECOVERY_NOT_FOUND
from happ_admin.recovery.repository import LOCK_TTL, RecoveryDoc, RecoveryRepository
from happ_admin.recovery.schemas import RecoveryCounts, RecoveryOut
from happ_common.errors import HappError

log = logging.getLogger(__name__)

T = TypeVar("T")

_PAGE = 200
_COUNT_PAGE = 500
# Progress is read from every queued reply's state: however many people (or
# browser tabs) follow a large recovery, it is counted at most this often.
_COUNTS_FRESH_S = 2.0
_COUNTS_KEPT = 1000
_BEAT_S = 5.0
# How long a stopping admin waits for a recovery to finish the reply it is on: a
# publish times out well within it.
_STOP_GRACE_S = 20.0
# How long a read of a recovery waits out the database being away before the
# recovery fails (asking again then queues what is still failed): with the beats'
# interval and an operation's own timeout, well within the channel lock's
# lifetime (LOCK_TTL), so no other recovery takes over meanwhile.
_OUTAGE_S = 20.0


class _Stopping(Exception):
    """The admin is stopping: the recovery ends between two replies."""


def recovery_not_found(recovery_id: str) -> HappError:
    return RECOVERY_NOT_FOUND(f"No recovery {recovery_id!r} on this channel.")


class RecoveryService:
    def __init__(
        self, repo: RecoveryRepository, channels: ChannelService, resender: ReplyResender
    ) -> None:
        self._repo = repo
        self._channels = channels
        self._resender = resender
        self._tasks: dict[str, asyncio.Task[None]] = {}
        # Per running recovery: when its progress (and lock) was last written.
        self._beats: dict[str, float] = {}
        # Per recovery, as of its state and total: its last counts and until
        # when they stand (forever once nothing it queued is left pending). A
        # new state or total counts again at once: a reader must never see a
        # recovery "done" with the counts of its scan.
        self._counted: dict[tuple[str, str, int], tuple[float, RecoveryCounts]] = {}
        self._stopping = False

    async def start(
        self, channel_id: str, since: datetime, requested_by: str | None
    ) -> tuple[RecoveryOut, bool]:
        """The new recovery and True, or the one already running and False."""
        channel = await self._channels.get(channel_id)
        require_sendable(channel)
        since = since if since.tzinfo else since.replace(tzinfo=UTC)
        now = datetime.now(UTC)
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)
        recovery_id = "rcv_" + uuid.uuid4().hex
        holder = await self._repo.lock(channel_id, recovery_id, now)
        if holder is not None:
            running = await self._repo.get(channel_id, holder)
            if running is None:
                raise RECOVERY_IN_PROGRESS(
                    "A recovery of this channel is starting; try again in a moment."
                )
            return await self.out(running), False
        doc = RecoveryDoc(
            id=recovery_id,
            channel_id=channel_id,
            since=since,
            requested_at=now,
            requested_by=requested_by,
            heartbeat_at=now,
        )
        try:
            await self._repo.insert(doc)
        except BaseException:
            await self._repo.unlock(channel_id, recovery_id)
            raise
        self._tasks[recovery_id] = asyncio.create_task(self._run(doc))
        return await self.out(doc), True

    async def get(self, channel_id: str, recovery_id: str) -> RecoveryOut:
        await self._channels.get(channel_id)
        doc = await self._repo.get(channel_id, recovery_id)
        if doc is None:
            raise recovery_not_found(recovery_id)
        return await self.out(doc)

    async def recent(self, channel_id: str, limit: int) -> list[RecoveryOut]:
        await self._channels.get(channel_id)
        return [await self.out(d) for d in await self._repo.recent(channel_id, limit)]

    async def stop(self) -> None:
        """Let each recovery finish the reply it is on, then stop it. Canceled between
        its claim and its publish, a reply would stay claimed ('pending') with no
        series to send it until the claim counts as stranded (minutes:
        happ_common.deliveries.STRANDED_CLAIM_S)."""
        self._stopping = True
        tasks = list(self._tasks.values())
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=_STOP_GRACE_S)
        for task in late:  # a publish hung past its own timeout: nothing else is left
            task.cancel()
        for task in late:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def out(self, doc: RecoveryDoc) -> RecoveryOut:
        state = doc.state
        if state == "running" and datetime.now(UTC) - doc.heartbeat_at > LOCK_TTL:
            state = "interrupted"  # its admin process died mid-scan
        return RecoveryOut(
            id=doc.id,
            channel_id=doc.channel_id,
            since=doc.since,
            requested_at=doc.requested_at,
            requested_by=doc.requested_by,
            state=state,
            conversations_scanned=doc.conversations,
            total=doc.queued,
            counts=await self._counts(doc),
            finished_at=doc.finished_at,
            error=doc.error,
        )

    async def _counts(self, doc: RecoveryDoc) -> RecoveryCounts:
        now = time.monotonic()
        key = (doc.id, doc.state, doc.queued)
        kept = self._counted.get(key)
        if kept is not None and now < kept[0]:
            return kept[1]
        counts = await self._count(doc)
        # The state as of the key: ``doc`` may be the running scan's own object.
        final = key[1] != "running" and counts.queued == 0
        if len(self._counted) >= _COUNTS_KEPT:
            self._counted = {k: v for k, v in self._counted.items() if v[0] > now}
            if len(self._counted) >= _COUNTS_KEPT:
                self._counted.clear()  # counted again when asked: nothing lost
        self._counted[key] = (math.inf if final else now + _COUNTS_FRESH_S, counts)
        return counts

    async def _count(self, doc: RecoveryDoc) -> RecoveryCounts:
        queued = delivered = failed = 0
        async for reply_ids in self._repo.item_pages(doc.id, _COUNT_PAGE):
            states = await self._repo.states([(doc.channel_id, r) for r in reply_ids])
            for r in reply_ids:
                state = states.get((doc.channel_id, r))
                status = state.status if state else "pending"
                if status == "delivered":
                    delivered += 1
                elif status in ("failed", "canceled"):
                    failed += 1
                else:
                    queued += 1
        return RecoveryCounts(queued=queued, delivered=delivered, failed=failed)

    async def _run(self, doc: RecoveryDoc) -> None:
        log.info("recovery %s of channel %s since %s started", doc.id, doc.channel_id, doc.since)
        try:
            await self._scan(doc)
            await self._repo.finish(doc, "done", datetime.now(UTC))
            log.info("recovery %s done: %d replies queued again", doc.id, doc.queued)
        except _Stopping:
            # The admin is stopping: asking again finishes the job.
            with contextlib.suppress(Exception):
                await self._repo.finish(doc, "interrupted", datetime.now(UTC))
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._repo.finish(doc, "interrupted", datetime.now(UTC)))
            raise
        except Exception as exc:
            log.warning("recovery %s failed after %d replies: %s", doc.id, doc.queued, exc)
            with contextlib.suppress(Exception):
                await self._repo.finish(doc, "failed", datetime.now(UTC), error=str(exc))
        finally:
            self._tasks.pop(doc.id, None)
            self._beats.pop(doc.id, None)
            with contextlib.suppress(Exception):
                await asyncio.shield(self._repo.unlock(doc.channel_id, doc.id))

    async def _scan(self, doc: RecoveryDoc) -> None:
        after: str | None = None
        while senders := await self._read(
            partial(self._repo.conversations, doc.channel_id, doc.since, after, _PAGE)
        ):
            for sender_id in senders:
                await self._conversation(doc, sender_id)
                doc.conversations += 1
                await self._beat(doc)
            after = senders[-1]
            await self._repo.progress(doc, datetime.now(UTC))

    async def _read(self, read: Callable[[], Awaitable[T]]) -> T:
        """A read of the scan, tried again while the database drops a connection
        or is away, for up to ``_OUTAGE_S`` from the first failure. Reads only: a
        requeue or an item's write whose answer was lost cannot be told from one
        that never landed, so those still end the recovery (asking again queues
        what is still failed)."""
        give_up: float | None = None
        pause = 0.5
        while True:
            try:
                return await read()
            except ConnectionFailure as exc:
                now = time.monotonic()
                give_up = give_up if give_up is not None else now + _OUTAGE_S
                if self._stopping:
                    raise _Stopping from exc
                if now + pause > give_up:
                    raise
                log.warning("recovery: the database is away, reading again: %s", exc)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)

    async def _conversation(self, doc: RecoveryDoc, sender_id: str) -> None:
        """Queue the conversation's failed replies, oldest first: one after the
        other on the conversation's key, so they are delivered in that order."""
        after: Keyset | None = None
        while page := await self._read(
            partial(self._repo.messages, doc.channel_id, sender_id, doc.since, after, _PAGE)
        ):
            after = (page[-1].created_at, page[-1].message_id)
            replies = [m for m in page if m.role != "user"]
            keys = [(m.channel_id, m.message_id) for m in replies]
            states = await self._read(partial(self._repo.states, keys))
            queued: list[str] = []
            for reply in replies:
                if self._stopping:
                    await self._repo.add_items(doc.id, doc.queued, queued)
                    doc.queued += len(queued)
                    raise _Stopping
                state = states.get((reply.channel_id, reply.message_id))
                # A reply another resend or recovery claimed and died before
                # queuing is as good as failed (happ_common.deliveries).
                failed = state is not None and (
                    state.status == "failed" or state.stranded(datetime.now(UTC))
                )
                if failed and await self._resender.requeue(reply, ("failed",)):
                    queued.append(reply.message_id)
                    await self._beat(doc)  # slow publishes must not outlive the lock
            await self._repo.add_items(doc.id, doc.queued, queued)
            doc.queued += len(queued)
            if len(page) < _PAGE:
                return
            await self._beat(doc)

    async def _beat(self, doc: RecoveryDoc) -> None:
        """Write progress and renew the lock every few seconds, well within the
        lock's lifetime however slow a page is, without a write per reply."""
        now = time.monotonic()
        if now - self._beats.get(doc.id, 0.0) >= _BEAT_S:
            self._beats[doc.id] = now
            await self._repo.progress(doc, datetime.now(UTC))
