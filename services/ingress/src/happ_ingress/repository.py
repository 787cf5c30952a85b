"""Idempotency claims: one document per (channel, integrator message id), 24 h TTL.

A claim is inserted *before* the publish (the unique ``_id`` settles races
between repeats) and marked ``accepted`` after the broker's ack. A claim left
unaccepted by a crashed or failed attempt can be taken over once it is stale, so
a repeat of a message that was never enqueued is processed instead of being
called a duplicate. Each claim carries its owner's token: a request that lost
its claim to a takeover must not release the new owner's.

The claim and the mark are one each per accepted message, so they go through
``Batcher``s: concurrent webhooks share one round trip instead of two each, the
database's per-operation cost being what bounds it (``make bench-db``). The
rare paths (a repeat, a takeover, a release) stay single operations.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from pymongo import InsertOne, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from happ_common.batching import Batcher, Write, Written, bulk_write_outcomes, outcome
from happ_common.mongo import IDEMPOTENCY, Document

ClaimState = Literal["claimed", "accepted", "in_progress"]


@dataclass(frozen=True)
class Claim:
    state: ClaimState
    # Set when this request owns the claim ("claimed"): the token its release needs.
    owner: str | None = None


class IdempotencyRepository:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._coll = db[IDEMPOTENCY]
        self._claims: Batcher[Write, Written] = Batcher("idempotency_claims", self._write)
        # Marks are made after the webhook has answered: a longer wait gathers more
        # of them into one write at no cost to anyone's latency.
        self._marks: Batcher[Write, Written] = Batcher(
            "idempotency_marks", self._write, max_wait_s=0.05
        )

    async def _write(self, ops: Sequence[Write]) -> list[Written]:
        return await bulk_write_outcomes(self._coll, ops)

    async def drain(self) -> None:
        await self._claims.drain()
        await self._marks.drain()

    @staticmethod
    def _id(channel_id: str, key: str) -> str:
        return f"{channel_id}\n{key}"

    async def claim(self, channel_id: str, key: str, stale_after_s: float) -> Claim:
        now = datetime.now(UTC)
        owner = secrets.token_hex(8)
        claimed = await self._claims.submit(
            InsertOne(
                {
                    "_id": self._id(channel_id, key),
                    "accepted": False,
                    "owner": owner,
                    "created_at": now,
                }
            )
        )
        if outcome(claimed):
            return Claim("claimed", owner)
        doc = await self._coll.find_one({"_id": self._id(channel_id, key)})
        if doc is None:  # expired between the two calls: try once more
            return await self.claim(channel_id, key, stale_after_s)
        if doc.get("accepted"):
            return Claim("accepted")
        if doc.get("owner") == owner:
            # Our own insert, landed by a batch whose reply was lost and then
            # retried alone: ours.
            return Claim("claimed", owner)
        taken = await self._coll.update_one(
            {
                "_id": self._id(channel_id, key),
                "accepted": False,
                "created_at": {"$lt": now - timedelta(seconds=stale_after_s)},
            },
            {"$set": {"created_at": now, "owner": owner}},
        )
        return Claim("claimed", owner) if taken.modified_count else Claim("in_progress")

    async def mark_accepted(self, channel_id: str, key: str) -> None:
        # Whoever owns the claim now, the message is on the broker: that is a fact
        # worth recording, even if the claim was released by a later owner meanwhile.
        marked = await self._marks.submit(
            UpdateOne(
                {"_id": self._id(channel_id, key)},
                {"$set": {"accepted": True}, "$setOnInsert": {"created_at": datetime.now(UTC)}},
                upsert=True,
            )
        )
        outcome(marked)

    async def release(self, channel_id: str, key: str, owner: str) -> None:
        await self._coll.delete_one(
            {"_id": self._id(channel_id, key), "owner": owner, "accepted": False}
        )
