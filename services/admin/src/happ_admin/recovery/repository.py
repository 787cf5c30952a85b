"""Storage of bulk recoveries (``happ_admin.recovery.service``); only the admin uses it.

* ``recoveries``: one document per recovery (its request and progress), and one
  lock per channel (``_id`` ``lock/<channel_id>``) held by the running one.
* ``recovery_items``: the replies a recovery queued, ``_id``
  ``<recovery_id>/<sequence>``, so they are read back in pages by a range on
  ``_id`` and no other index.

Every scan pages by a key that never moves (conversations by ``_id``, a
conversation's messages by ``(created_at, message_id)``): a conversation that
gets a new message during the scan is neither skipped nor read twice.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from happ_admin.cursors import Keyset, all_of, keyset_after
from happ_common.deliveries import DeliveryState, DeliveryStates
from happ_common.ids import conversation_id
from happ_common.messages import WITHOUT_REQUEST, StoredMessage
from happ_common.mongo import CONVERSATIONS, MESSAGES, Document

RECOVERIES = "recoveries"
RECOVERY_ITEMS = "recovery_items"
# A running recovery renews its channel's lock at every page; one whose admin
# process died loses it after this long, and a new request takes over.
LOCK_TTL = timedelta(seconds=60)

RecoveryState = Literal["running", "done", "failed", "interrupted"]


class RecoveryDoc(BaseModel):
    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True, extra="ignore")

    id: str = Field(alias="_id")
    channel_id: str
    since: datetime
    requested_at: datetime
    requested_by: str | None = None
    state: RecoveryState = "running"
    queued: int = 0
    conversations: int = 0
    heartbeat_at: datetime
    finished_at: datetime | None = None
    error: str | None = None


def _lock_id(channel_id: str) -> str:
    return f"lock/{channel_id}"


class RecoveryRepository:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._recoveries = db[RECOVERIES]
        self._items = db[RECOVERY_ITEMS]
        self._conversations = db[CONVERSATIONS]
        self._messages = db[MESSAGES]
        self._states = DeliveryStates(db)

    async def ensure_indexes(self) -> None:
        await self._recoveries.create_index(
            [("channel_id", ASCENDING), ("requested_at", DESCENDING)],
            name="channel_recent",
            sparse=True,
        )

    # --- the channel's lock: one recovery at a time keeps each conversation's order

    async def lock(self, channel_id: str, recovery_id: str, now: datetime) -> str | None:
        """Take the channel's lock for ``recovery_id``; None if taken, otherwise
        the id of the recovery holding it."""
        _id = _lock_id(channel_id)
        fields = {"recovery_id": recovery_id, "expires_at": now + LOCK_TTL}
        try:
            await self._recoveries.insert_one({"_id": _id, **fields})
            return None
        except DuplicateKeyError:
            pass
        taken = await self._recoveries.update_one(
            {"_id": _id, "expires_at": {"$lt": now}}, {"$set": fields}
        )
        if taken.modified_count == 1:
            return None
        doc = await self._recoveries.find_one({"_id": _id})
        return str(doc["recovery_id"]) if doc else recovery_id

    async def unlock(self, channel_id: str, recovery_id: str) -> None:
        await self._recoveries.delete_one({"_id": _lock_id(channel_id), "recovery_id": recovery_id})

    # --- the recovery document ------------------------------------------------

    async def insert(self, doc: RecoveryDoc) -> None:
        await self._recoveries.insert_one(doc.model_dump(by_alias=True))

    async def get(self, channel_id: str, recovery_id: str) -> RecoveryDoc | None:
        doc = await self._recoveries.find_one({"_id": recovery_id, "channel_id": channel_id})
        return RecoveryDoc.model_validate(doc) if doc else None

    async def recent(self, channel_id: str, limit: int) -> list[RecoveryDoc]:
        cursor = (
            self._recoveries.find({"channel_id": channel_id})
            .sort("requested_at", DESCENDING)
            .limit(limit)
        )
        return [RecoveryDoc.model_validate(d) async for d in cursor]

    async def progress(self, doc: RecoveryDoc, now: datetime) -> None:
        """Counters and heartbeat; renews the channel's lock."""
        await self._recoveries.update_one(
            {"_id": doc.id},
            {
                "$set": {
                    "queued": doc.queued,
                    "conversations": doc.conversations,
                    "heartbeat_at": now,
                }
            },
        )
        await self._recoveries.update_one(
            {"_id": _lock_id(doc.channel_id), "recovery_id": doc.id},
            {"$set": {"expires_at": now + LOCK_TTL}},
        )

    async def finish(
        self, doc: RecoveryDoc, state: RecoveryState, now: datetime, error: str | None = None
    ) -> None:
        await self._recoveries.update_one(
            {"_id": doc.id},
            {
                "$set": {
                    "state": state,
                    "queued": doc.queued,
                    "conversations": doc.conversations,
                    "heartbeat_at": now,
                    "finished_at": now,
                    "error": error,
                }
            },
        )

    # --- what a recovery reads ------------------------------------------------

    async def conversations(
        self, channel_id: str, since: datetime, after: str | None, limit: int
    ) -> list[str]:
        """Senders with activity since ``since``, by conversation ``_id``
        (``<channel>\\n<sender>``), after the ``after`` sender."""
        low = conversation_id(channel_id, after if after is not None else "")
        cursor = (
            self._conversations.find(
                {
                    "_id": {"$gt": low, "$lt": f"{channel_id}\x0b"},
                    "last_message_at": {"$gte": since},
                },
                {"sender_id": 1},
            )
            .sort("_id", ASCENDING)
            .limit(limit)
        )
        return [str(d["sender_id"]) async for d in cursor]

    async def messages(
        self, channel_id: str, sender_id: str, since: datetime, after: Keyset | None, limit: int
    ) -> list[StoredMessage]:
        """A conversation's messages created since ``since``, oldest first."""
        query: Document = {
            "channel_id": channel_id,
            "sender_id": sender_id,
            "created_at": {"$gte": since},
        }
        cursor = (
            self._messages.find(
                all_of(query, keyset_after("created_at", "message_id", after, descending=False)),
                WITHOUT_REQUEST,
            )
            .sort([("created_at", ASCENDING), ("message_id", ASCENDING)])
            .limit(limit)
        )
        return [StoredMessage.model_validate(d) async for d in cursor]

    async def states(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], DeliveryState]:
        return await self._states.many(keys)

    # --- the replies a recovery queued ---------------------------------------

    async def add_items(self, recovery_id: str, first: int, reply_ids: Sequence[str]) -> None:
        if reply_ids:
            await self._items.insert_many(
                [
                    {"_id": f"{recovery_id}/{first + i:09d}", "reply_id": r}
                    for i, r in enumerate(reply_ids)
                ]
            )

    async def item_pages(self, recovery_id: str, size: int) -> AsyncIterator[list[str]]:
        """The replies a recovery queued, ``size`` at a time."""
        low = f"{recovery_id}/"
        while True:
            cursor = (
                self._items.find({"_id": {"$gt": low, "$lt": f"{recovery_id}0"}})
                .sort("_id", ASCENDING)
                .limit(size)
            )
            docs = await cursor.to_list(None)
            if not docs:
                return
            yield [str(d["reply_id"]) for d in docs]
            low = str(docs[-1]["_id"])
