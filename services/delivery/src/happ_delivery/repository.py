"""The delivery state of replies (``happ_common.deliveries``): written here.

A reply's delivery is a small state machine, each step recorded before the
next one starts (``service.py``):

* A reply's first attempt is sent without a claim: no state means it was
  never attempted, and its outcome is its first state, one insert batched with
  other replies' (``insert_many``). A crash between its POST and that insert
  leaves no state, so the next owner sends attempt 1 again, with the same
  delivery id: what a claim left ``sending`` would have made it do, for one
  write per reply instead of two.
* ``claim_next`` / ``claim_missing`` mark a later attempt (a retry, a resend)
  ``sending`` before its POST: compare-and-set updates on the (status,
  attempts) just read, so two records of one reply never both send the same
  attempt.
* ``record`` writes the attempt's outcome, batched: ``delivered``, ``failed``,
  ``canceled``, or ``retrying`` with the retry's due time, which also lists the
  reply in ``pending_retries`` (by partition) so that the partition's next
  owner can close the conversation's gate before it handles anything.
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
    FIRST_ATTEMPT,
    DeliveryState,
    DeliveryStates,
    DeliveryStatus,
    PendingRetry,
    delivery_id,
    first_attempt_log_id,
)
from happ_common.mongo import DELIVERIES, DUPLICATE_KEY, PENDING_RETRIES, Document
from happ_common.request_log import LogEntry, document
from happ_common.webhook_client import AttemptOutcome

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Write:
    """One outcome to record: the state's fields, and what it does to the reply's
    entry in ``pending_retries`` (added when a retry is scheduled, removed when
    a series that had one ends)."""

    _id: str
    attempt: int
    fields: Document
    pending_retry: UpdateOne | DeleteOne | None


class DeliveryRepository:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._deliveries = db[DELIVERIES]
        self._pending = db[PENDING_RETRIES]
        self._states = DeliveryStates(db)
        self._reads: Batcher[tuple[str, str], DeliveryState | None] = Batcher(
            "delivery_state", self._read_many
        )
        self._firsts: Batcher[Document, bool] = Batcher("delivery_first", self._insert_many)
        self._writes: Batcher[_Write, None] = Batcher("delivery_update", self._write_many)

    async def state(self, channel_id: str, reply_id: str) -> DeliveryState | None:
        """The reply's state; None if no attempt was ever claimed."""
        return await self._reads.submit((channel_id, reply_id))

    async def _read_many(self, keys: Sequence[tuple[str, str]]) -> list[DeliveryState | None]:
        found = await self._states.many(keys)
        return [found.get(k) for k in keys]

    async def _insert_many(self, docs: Sequence[Document]) -> list[bool]:
        inserted = [True] * len(docs)
        try:
            await self._deliveries.insert_many(list(docs), ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != DUPLICATE_KEY for e in errors):
                raise
            for e in errors:
                inserted[e["index"]] = False
        return inserted

    async def claim_next(
        self, channel_id: str, reply_id: str, seen: DeliveryState, attempt: int
    ) -> bool:
        """Claim ``attempt`` if the state is still ``seen`` (compare-and-set)."""
        result = await self._deliveries.update_one(
            {
                "_id": delivery_id(channel_id, reply_id),
                "status": seen.status,
                "attempts": seen.attempts,
            },
            {
                "$set": {
                    "status": "sending",
                    "attempts": attempt,
                    "next_attempt_at": None,
                    "updated_at": datetime.now(UTC),
                }
            },
        )
        return result.modified_count == 1

    async def claim_missing(self, channel_id: str, reply_id: str, attempt: int) -> bool:
        """Claim ``attempt`` of a reply whose state is missing (a resend of a
        reply that predates the state, or a lost document)."""
        result = await self._deliveries.update_one(
            {"_id": delivery_id(channel_id, reply_id)},
            {
                "$setOnInsert": {
                    "channel_id": channel_id,
                    "reply_id": reply_id,
                    "status": "sending",
                    "attempts": attempt,
                    "updated_at": datetime.now(UTC),
                }
            },
            upsert=True,
        )
        return result.upserted_id is not None

    async def _write_many(self, writes: Sequence[_Write]) -> list[None]:
        # A scheduled retry is listed before its state says "retrying", and
        # unlisted only after the state says the series ended: a crash between
        # the two writes leaves an entry that pending_retries() recognises.
        added = [w.pending_retry for w in writes if isinstance(w.pending_retry, UpdateOne)]
        if added:
            await self._pending.bulk_write(added, ordered=False)
        # Only over the claim it follows: an outcome that lands late (its
        # sender cut off, the attempt sent again by another) must not roll the
        # state back.
        await self._deliveries.bulk_write(
            [
                UpdateOne(
                    {"_id": w._id, "status": "sending", "attempts": w.attempt}, {"$set": w.fields}
                )
                for w in writes
            ],
            ordered=True,
        )
        removed = [w.pending_retry for w in writes if isinstance(w.pending_retry, DeleteOne)]
        if removed:
            try:
                await self._pending.bulk_write(removed, ordered=False)
            except PyMongoError as exc:
                # The outcomes are recorded; an entry left behind is recognised
                # by its ended state at the next takeover (pending_retries), so
                # this must not fail the batch.
                log.warning("pending retries not removed (%d): %s", len(removed), exc)
        return [None] * len(writes)

    async def record(
        self,
        channel_id: str,
        reply_id: str,
        status: DeliveryStatus,
        *,
        attempt: int,
        outcome: AttemptOutcome | None = None,
        error_code: str | None = None,
        sender_id: str | None = None,
        partition: int | None = None,
        next_attempt_at: datetime | None = None,
        pauses: int = 0,
        claimed: bool = True,
        attempt_log: LogEntry | None = None,
    ) -> bool:
        """Record the outcome of ``attempt``, whose claim (``sending``) it must
        follow; ``claimed=False``: of a first attempt sent without a claim, whose
        outcome is the reply's first state (should another member have recorded
        one meanwhile, theirs stays), with ``attempt_log``, the attempt's
        request-log entry. ``partition`` and ``sender_id`` go with ``retrying``;
        an ended series with ``attempt`` > 1 had a retry pending. ``error_code``
        without an ``outcome``: why the series ended unsent. ``pauses``: how many
        of the attempts so far, this one included, did not count (Retry-After).

        True if ``attempt_log`` is kept with the state; False if the caller is to
        log it (there is none, or another member's state won)."""
        now = datetime.now(UTC)
        _id = delivery_id(channel_id, reply_id)
        fields: Document = {
            "channel_id": channel_id,
            "reply_id": reply_id,
            "status": status,
            "attempts": attempt,
            "pauses": pauses,
            "updated_at": now,
            "next_attempt_at": next_attempt_at if status == "retrying" else None,
        }
        if outcome is not None:
            fields |= {
                "last_status_code": outcome.status_code,
                "last_error_code": outcome.error_code,
                "last_attempt_at": now,
            }
        elif error_code is not None:  # ended without a POST (deliveries turned off)
            fields |= {"last_status_code": None, "last_error_code": error_code}
        if status == "delivered":
            fields["delivered_at"] = now
        pending: UpdateOne | DeleteOne | None = None
        if status == "retrying":
            entry = PendingRetry(
                channel_id=channel_id,
                sender_id=sender_id or "",
                reply_id=reply_id,
                partition=partition if partition is not None else -1,
            )
            pending = UpdateOne({"_id": _id}, {"$set": entry.model_dump()}, upsert=True)
        elif attempt > 1 or status == "canceled":
            pending = DeleteOne({"_id": _id})
        if not claimed:
            if isinstance(pending, UpdateOne):
                # Listed before the state says "retrying", as in _write_many.
                await self._pending.bulk_write([pending], ordered=False)
            first: Document = {"_id": _id, **fields}
            if attempt_log is not None:
                logged = document(attempt_log)
                del logged["_id"]
                logged["id"] = first_attempt_log_id(channel_id, reply_id, attempt_log.id)
                first[FIRST_ATTEMPT] = logged
            if await self._firsts.submit(first):
                return attempt_log is not None
            if attempt_log is None:
                return False
            # Taken: by another member's state, or by this very insert, which
            # landed before an error had it retried.
            ours = {"_id": _id, f"{FIRST_ATTEMPT}.id": first[FIRST_ATTEMPT]["id"]}
            return await self._deliveries.find_one(ours, {"_id": 1}) is not None
        await self._writes.submit(_Write(_id, attempt, fields, pending))
        return False

    async def pending_retries(self, partitions: set[int]) -> list[PendingRetry]:
        return await self._states.pending_retries(partitions)

    async def drain(self) -> None:
        await self._reads.drain()
        await self._firsts.drain()
        await self._writes.drain()
