"""Idempotency claims: one document per (channel, integrator message id), 24 h TTL.

A claim is inserted *before* the publish (the unique ``_id`` settles races
between repeats) and marked ``accepted`` after the broker's ack. A claim left
unaccepted by a crashed or failed attempt can be taken over, so a repeat of a
message that was never enqueued is processed instead of being called a duplicate.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from happ_common.mongo import IDEMPOTENCY, Document

ClaimResult = Literal["claimed", "accepted", "in_progress"]


class IdempotencyRepository:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._coll = db[IDEMPOTENCY]

    @staticmethod
    def _id(channel_id: str, key: str) -> str:
        return f"{channel_id}\n{key}"

    async def claim(self, channel_id: str, key: str, stale_after_s: float) -> ClaimResult:
        now = datetime.now(UTC)
        try:
            await self._coll.insert_one(
                {"_id": self._id(channel_id, key), "accepted": False, "created_at": now}
            )
            return "claimed"
        except DuplicateKeyError:
            pass
        doc = await self._coll.find_one({"_id": self._id(channel_id, key)})
        if doc is None:  # expired between the two calls: try once more
            return await self.claim(channel_id, key, stale_after_s)
        if doc.get("accepted"):
            return "accepted"
        taken = await self._coll.update_one(
            {
                "_id": self._id(channel_id, key),
                "accepted": False,
                "created_at": {"$lt": now - timedelta(seconds=stale_after_s)},
            },
            {"$set": {"created_at": now}},
        )
        return "claimed" if taken.modified_count else "in_progress"

    async def mark_accepted(self, channel_id: str, key: str) -> None:
        await self._coll.update_one(
            {"_id": self._id(channel_id, key)}, {"$set": {"accepted": True}}
        )

    async def release(self, channel_id: str, key: str) -> None:
        await self._coll.delete_one({"_id": self._id(channel_id, key), "accepted": False})
