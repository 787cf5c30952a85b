"""Replies handed out by the ingress itself (SPEC §3a): ``Prefer: wait`` and
``GET /webhook/{id}/replies``.

A waiting webhook is an asyncio future, not a worker: each replica reads
``outbound.replies`` in full with no consumer group (every replica must see
every reply, since the request waiting for it may be on any of them), from
the end at startup, and resolves the futures registered for
``(channel_id, in_reply_to)``. Records whose key (the conversation) has no
waiter are skipped without being decoded, so a replica with nobody waiting
pays only the fetch.

No reply can be missed between the publish and the wait: the waiter is
registered first, then MongoDB is read for a reply that already exists. The
assistant stores a reply before it publishes it, so a reply published before
the registration is found in the database, and one published after it is
read from the topic (the reader's position was fixed at startup, before any
registration).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import Counter, Gauge
from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase

from happ_common.events import OutboundReply
from happ_common.ids import output_ids_for
from happ_common.kafka_connection import client_options
from happ_common.messages import WITHOUT_REQUEST, StoredMessage, outbound
from happ_common.mongo import MESSAGES, Document
from happ_common.settings import InfraSettings
from happ_common.topics import OUTBOUND_REPLIES

log = logging.getLogger(__name__)

WAITING = Gauge("happ_ingress_waiting_requests", "Webhook requests waiting for their reply")
WAITS = Counter(
    "happ_ingress_waits_total",
    "Webhook requests with Prefer: wait, by outcome",
    ["outcome"],  # replied, stored (found in MongoDB), timeout, full, disconnected
)

WaiterKey = tuple[str, str]  # (channel_id, the incoming message_id)


class ReplyStore:
    """Replies as the assistant stored them, read back for the integrator."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._messages = db[MESSAGES]

    async def reply_to(self, channel_id: str, message_id: str) -> OutboundReply | None:
        """The first thing sent for ``message_id`` (its reply or notice, else its
        handoff event), as it was published; None while there is none."""
        reply_id, event_id = output_ids_for(channel_id, message_id)
        found = {
            d["message_id"]: StoredMessage.model_validate(d)
            async for d in self._messages.find(
                # Equality on channel_id, then $in on message_id: the unique index.
                {"channel_id": channel_id, "message_id": {"$in": [message_id, reply_id, event_id]}},
                WITHOUT_REQUEST,
            )
        }
        user = found.get(message_id)
        reply = found.get(reply_id) or found.get(event_id)
        if reply is None:
            return None
        # Published with the user message's metadata (notices store none of their own).
        return outbound(reply, user.metadata if user is not None else reply.metadata)

    async def replies_after(
        self, channel_id: str, after: str | None, limit: int, settled_before: datetime
    ) -> list[OutboundReply] | None:
        """Up to ``limit`` replies of the channel created after the message
        ``after`` (any message of the channel, the integrator's own or a reply),
        oldest first; None when ``after`` names no message of the channel.

        Only replies created before ``settled_before`` are listed: a reply's
        ``created_at`` is set just before it is stored, so a reply listed later
        with an earlier time than one already handed out would be skipped by a
        client paging with ``after``."""
        query: Document = {
            "channel_id": channel_id,
            "role": {"$ne": "user"},
            "created_at": {"$lt": settled_before},
        }
        if after is not None:
            cursor_doc = await self._messages.find_one(
                {"channel_id": channel_id, "message_id": after}, {"created_at": 1, "_id": 1}
            )
            if cursor_doc is None:
                return None
            at, _id = cursor_doc["created_at"], cursor_doc["_id"]
            query["$or"] = [{"created_at": {"$gt": at}}, {"created_at": at, "_id": {"$gt": _id}}]
        docs = (
            self._messages.find(query)
            .sort([("created_at", ASCENDING), ("_id", ASCENDING)])
            .limit(limit)
        )
        stored = [StoredMessage.model_validate(d) async for d in docs]
        metadata = await self._metadata(channel_id, {m.in_reply_to for m in stored} - {None})
        return [outbound(m, metadata.get(m.in_reply_to) if m.in_reply_to else None) for m in stored]

    async def _metadata(
        self, channel_id: str, message_ids: set[str | None]
    ) -> dict[str, dict[str, Any] | None]:
        ids = sorted(i for i in message_ids if i is not None)
        if not ids:
            return {}
        cursor = self._messages.find(
            {"channel_id": channel_id, "message_id": {"$in": ids}}, {"message_id": 1, "metadata": 1}
        )
        return {d["message_id"]: d.get("metadata") async for d in cursor}


class ReplyWaiters:
    """The webhook requests waiting for their reply on this replica."""

    def __init__(self, infra: InfraSettings, store: ReplyStore, max_waiting: int) -> None:
        self._infra = infra
        self._store = store
        self._max = max_waiting
        self._waiters: dict[WaiterKey, list[asyncio.Future[OutboundReply]]] = {}
        # Conversation key → waiters in it: the reader's test before decoding.
        self._conversations: dict[bytes, int] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self.ready = False

    def __len__(self) -> int:
        return sum(len(w) for w in self._waiters.values())

    async def start(self) -> None:
        """Assign every partition and fix the position at the end. Failing that
        (the broker away at startup), the reader keeps trying in the background
        and waits answer 202 at once until it is ready."""
        self._task = asyncio.create_task(self._run())

    async def _open(self) -> AIOKafkaConsumer:
        consumer = AIOKafkaConsumer(
            **client_options(self._infra),
            client_id="happ-ingress-replies",
            enable_auto_commit=False,
            group_id=None,
            # A Kafka broker answers a fetch as soon as a record arrives, so this
            # only paces idle polling (the embedded broker waits it out: see
            # InfraSettings).
            fetch_max_wait_ms=self._infra.kafka_fetch_max_wait_ms,
        )
        await consumer.start()
        try:
            partitions = await _partitions(consumer)
            consumer.assign(partitions)
            await consumer.seek_to_end(*partitions)
            # seek_to_end is lazy: resolve the offsets now, so a reply published
            # after a waiter registers is never before the reader's position.
            for tp in partitions:
                await consumer.position(tp)
        except BaseException:
            await consumer.stop()
            raise
        return consumer

    async def _run(self) -> None:
        while True:
            try:
                self._consumer = await self._open()
                self.ready = True
                log.info("reading %s for waiting webhooks", OUTBOUND_REPLIES)
                if self._waiters:
                    # Started again after a failure: replies published while the
                    # reader was away are before its new position, but stored.
                    await self._recheck(list(self._waiters))
                while True:
                    batches = await self._consumer.getmany(timeout_ms=500, max_records=2000)
                    for records in batches.values():
                        for record in records:
                            if record.key in self._conversations:
                                self._resolve(record.value)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # New waits are answered 202 at once until the position is fixed
                # again; the waits already registered are checked against the
                # database once it is (above).
                self.ready = False
                log.warning("reading %s failed, starting again: %s", OUTBOUND_REPLIES, exc)
                if self._consumer is not None:
                    await _quietly(self._consumer.stop())
                    self._consumer = None
                await asyncio.sleep(1.0)

    async def _recheck(self, keys: list[WaiterKey]) -> None:
        for channel_id, message_id in keys:
            try:
                reply = await self._store.reply_to(channel_id, message_id)
            except Exception as exc:
                log.warning("reading the reply to %s failed: %s", message_id, exc)
                continue
            for future in self._waiters.get((channel_id, message_id), ()):
                if reply is not None and not future.done():
                    future.set_result(reply)

    def _resolve(self, value: bytes | None) -> None:
        if value is None:
            return
        try:
            reply = OutboundReply.model_validate_json(value)
        except ValueError:
            return  # the delivery service dead-letters it; nobody waits for it
        if reply.in_reply_to is None or reply.event == "typing":
            return  # a typing event announces the reply; it is not the reply
        for future in self._waiters.get((reply.channel_id, reply.in_reply_to), ()):
            if not future.done():
                future.set_result(reply)

    async def wait(
        self,
        channel_id: str,
        message_id: str,
        conversation: bytes,
        timeout_s: float,
        disconnected: Callable[[], Awaitable[Any]],
    ) -> OutboundReply | None:
        """The reply to ``message_id``, or None when it did not come within
        ``timeout_s``, the client went away, or too many requests wait already."""
        if not self.ready or len(self) >= self._max:
            WAITS.labels(outcome="full" if self.ready else "not_ready").inc()
            return None
        key = (channel_id, message_id)
        future: asyncio.Future[OutboundReply] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, []).append(future)
        self._conversations[conversation] = self._conversations.get(conversation, 0) + 1
        WAITING.inc()
        watcher = asyncio.ensure_future(disconnected())
        try:
            # Registered first, then the database: see the module's docstring.
            try:
                stored = await self._store.reply_to(channel_id, message_id)
            except Exception as exc:
                # The message is accepted: a failed read must not turn that into an
                # error the integrator would answer by sending it again. A reply
                # already published is then missed, and the wait ends in a 202.
                log.warning("reading the reply to %s failed, waiting on: %s", message_id, exc)
                stored = None
            if stored is not None:
                WAITS.labels(outcome="stored").inc()
                return stored
            done, _ = await asyncio.wait(
                {future, watcher}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
            if future in done:
                WAITS.labels(outcome="replied").inc()
                return future.result()
            WAITS.labels(outcome="disconnected" if watcher in done else "timeout").inc()
            return None
        finally:
            watcher.cancel()
            WAITING.dec()
            self._forget(key, conversation, future)

    def _forget(
        self, key: WaiterKey, conversation: bytes, future: asyncio.Future[OutboundReply]
    ) -> None:
        futures = self._waiters.get(key, [])
        if future in futures:
            futures.remove(future)
        if not futures:
            self._waiters.pop(key, None)
        left = self._conversations.get(conversation, 0) - 1
        if left > 0:
            self._conversations[conversation] = left
        else:
            self._conversations.pop(conversation, None)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await _quietly(self._task)
        if self._consumer is not None:
            await _quietly(self._consumer.stop())


async def _partitions(consumer: AIOKafkaConsumer) -> list[TopicPartition]:
    # The metadata may not list the topic on the first request.
    for _ in range(50):
        found = consumer.partitions_for_topic(OUTBOUND_REPLIES)
        if found:
            return [TopicPartition(OUTBOUND_REPLIES, p) for p in sorted(found)]
        await asyncio.sleep(0.1)
        await consumer.topics()
    raise RuntimeError(f"{OUTBOUND_REPLIES} has no partitions")


async def _quietly(awaitable: Awaitable[Any]) -> None:
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await awaitable


def settled(now: datetime | None = None) -> datetime:
    """Replies older than this are listed by GET replies (see ``replies_after``)."""
    return (now or datetime.now(UTC)) - timedelta(seconds=2)
