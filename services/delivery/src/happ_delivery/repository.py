"""The delivery state of replies (``happ_common.deliveries``): written here.

Reads and writes go through batchers: with thousands of replies in flight, each
delivery's state check and state write share round trips with the others. A
reply's first outcome is an insert (one ``insert_many`` for the whole batch);
an insert that finds the reply's document already there (a replay after a
crash) falls back to the update that every later outcome is.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pymongo import DeleteOne, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, PyMongoError

from happ_common.batching import Batcher
from happ_common.deliveries import (
    DeliveryState,
    DeliveryStates,
    DeliveryStatus,
    PendingRetry,
    delivery_id,
)
from happ_common.mongo import DELIVERIES, PENDING_RETRIES, Document
from happ_common.webhook_client import AttemptOutcome

log = logging.getLogger(__name__)

DUPLICATE_KEY = 11000


@dataclass(frozen=True)
class _Write:
    """One outcome to record: the state's fields, and what it does to the reply's
    entry in ``pending_retries`` (added when a retry is scheduled, removed when
    a series that had one ends)."""

    _id: str
    fields: Document
    first: bool
    pending_retry: UpdateOne | DeleteOne | None


class DeliveryRepository:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._deliveries = db[DELIVERIES]
        self._pending = db[PENDING_RETRIES]
        self._states = DeliveryStates(db)
        self._reads: Batcher[tuple[str, str], DeliveryState] = Batcher(
            "delivery_state", self._read_many
        )
        self._writes: Batcher[_Write, None] = Batcher("delivery_update", self._write_many)

    async def state(self, channel_id: str, reply_id: str) -> DeliveryState:
        return await self._reads.submit((channel_id, reply_id))

    async def _read_many(self, keys: Sequence[tuple[str, str]]) -> list[DeliveryState]:
        found = await self._states.many(keys)
        return [found.get(k) or DeliveryState() for k in keys]

    async def _write_many(self, writes: Sequence[_Write]) -> list[None]:
        # A scheduled retry is listed before its state says "retrying", and
        # unlisted only after the state says the series ended: a crash between
        # the two writes leaves an entry that pending_retries() recognises.
        added = [w.pending_retry for w in writes if isinstance(w.pending_retry, UpdateOne)]
        if added:
            await self._pending.bulk_write(added, ordered=False)
        updates = [w for w in writes if not w.first]
        firsts = [w for w in writes if w.first]
        if firsts:
            try:
                await self._deliveries.insert_many(
                    [{"_id": w._id, **w.fields} for w in firsts], ordered=False
                )
            except BulkWriteError as exc:
                errors = exc.details.get("writeErrors", [])
                if any(e.get("code") != DUPLICATE_KEY for e in errors):
                    raise
                updates += [firsts[e["index"]] for e in errors]
        if updates:
            await self._deliveries.bulk_write(
                [UpdateOne({"_id": w._id}, {"$set": w.fields}, upsert=True) for w in updates],
                ordered=True,
            )
        removed = [w.pending_retry for w in writes if isinstance(w.pending_retry, DeleteOne)]
        if removed:
            try:
                await self._pending.bulk_write(removed, ordered=False)
            except PyMongoError as exc:
                # The outcomes are recorded; an entry left behind is recognised
                # by its ended state at the next takeover (pending_retries), so
                # this must not fail the batch and send its replies again.
                log.warning("pending retries not removed (%d): %s", len(removed), exc)
        return [None] * len(writes)

    async def record(
        self,
        channel_id: str,
        reply_id: str,
        status: DeliveryStatus,
        *,
        attempt: int | None = None,
        outcome: AttemptOutcome | None = None,
        sender_id: str | None = None,
        partition: int | None = None,
        next_attempt_at: datetime | None = None,
        first: bool = False,
    ) -> None:
        """Record where a reply's delivery stands.

        ``first``: the first outcome of the reply's first series (no document yet,
        except after a crash). ``partition`` and ``sender_id`` go with
        ``retrying``; an ended series with ``attempt`` > 1 had a retry pending."""
        now = datetime.now(UTC)
        _id = delivery_id(channel_id, reply_id)
        fields: Document = {
            "channel_id": channel_id,
            "reply_id": reply_id,
            "status": status,
            "updated_at": now,
        }
        if attempt is not None and outcome is not None:
            fields |= {
                "attempts": attempt,
                "last_status_code": outcome.status_code,
                "last_error_code": outcome.error_code,
                "last_attempt_at": now,
            }
        if status == "delivered":
            fields["delivered_at"] = now
        fields["next_attempt_at"] = next_attempt_at if status == "retrying" else None
        pending: UpdateOne | DeleteOne | None = None
        if status == "retrying":
            entry = PendingRetry(
                channel_id=channel_id,
                sender_id=sender_id or "",
                reply_id=reply_id,
                partition=partition if partition is not None else -1,
            )
            pending = UpdateOne({"_id": _id}, {"$set": entry.model_dump()}, upsert=True)
        elif (attempt is not None and attempt > 1) or status == "canceled":
            pending = DeleteOne({"_id": _id})
        await self._writes.submit(_Write(_id, fields, first, pending))

    async def pending_retries(self, partitions: set[int]) -> list[PendingRetry]:
        return await self._states.pending_retries(partitions)

    async def drain(self) -> None:
        await self._reads.drain()
        await self._writes.drain()
