"""The assistant's reads and writes of conversations.

Writes are idempotent: a message redelivered by Kafka finds its documents
already there (``$setOnInsert`` keyed on the unique ``(channel_id, message_id)``).
"""

from __future__ import annotations

from datetime import UTC, datetime

from pymongo.asynchronous.database import AsyncDatabase

from happ_common.messages import MessageRepository, StoredMessage
from happ_common.mongo import MESSAGES, Document


class ConversationRepository:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._messages = db[MESSAGES]
        self._repo = MessageRepository(db)

    async def insert_once(self, message: StoredMessage) -> None:
        doc = message.model_dump()
        doc["updated_at"] = datetime.now(UTC)
        await self._messages.update_one(
            {"channel_id": message.channel_id, "message_id": message.message_id},
            {"$setOnInsert": doc},
            upsert=True,
        )

    async def get(self, channel_id: str, message_id: str) -> StoredMessage | None:
        return await self._repo.get(channel_id, message_id)

    async def history_before(
        self, channel_id: str, sender_id: str, message_id: str, limit: int
    ) -> list[StoredMessage]:
        """Up to ``limit`` messages of the conversation other than ``message_id``, oldest first."""
        recent = await self._repo.recent(channel_id, sender_id, limit + 1)
        return [m for m in recent if m.message_id != message_id][-limit:] if limit else []

    async def mark_replied(self, channel_id: str, message_id: str, reply_id: str) -> None:
        await self._messages.update_one(
            {"channel_id": channel_id, "message_id": message_id, "status": "accepted"},
            {"$set": {"status": "replied", "reply_id": reply_id, "updated_at": datetime.now(UTC)}},
        )

    async def touch_conversation(
        self, channel_id: str, sender_id: str, sender_name: str | None, at: datetime
    ) -> None:
        await self._repo.touch_conversation(channel_id, sender_id, sender_name, at)
