"""Idempotency claims: one document per (channel, integrator message id), 24 h TTL.

A claim is inserted *before* the publish (the unique ``_id`` settles races
between repeats) and marked ``accepted`` after the broker's ack. A claim left
unaccepted by a crashed or failed attempt can be taken over once it is stale, so
a repeat of a message that was never enqueued is processed instead of being
called a duplicate. Each claim carries its owner's token: a request that lost
its claim to a takeover must not release the new owner's.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

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

    @staticmethod
    def _id(channel_id: str, key: str) -> str:
        return f"{channel_id}\n{key}"

    async def claim(self, channel_id: str, key: str, stale_after_s: float) -> Claim:
        now = datetime.now(UTC)
        owner = secrets.token_hex(8)
        try:
            await self._coll.insert_one(
                {
                    "_id": self._id(channel_id, key),
                    "accepted": False,
                    "owner": owner,
                    "created_at": now,
                }
            )
            return Claim("claimed", owner)
        except DuplicateKeyError:
            pass
        doc = await self._coll.find_one({"_id": self._id(channel_id, key)})
        if doc is None:  # expired between the two calls: try once more
            return await self.claim(channel_id, key, stale_after_s)
        if doc.get("accepted"):
            return Claim("accepted")
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
        await self._coll.update_one(
            {"_id": self._id(channel_id, key)},
            {"$set": {"accepted": True}, "$setOnInsert": {"created_at": datetime.now(UTC)}},
            upsert=True,
        )

    async def release(self, channel_id: str, key: str, owner: str) -> None:
        await self._coll.delete_one(
            {"_id": self._id(channel_id, key), "owner": owner, "accepted": False}
        )
