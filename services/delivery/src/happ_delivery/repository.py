"""The delivery state of replies, on the reply's message document."""

from __future__ import annotations

from datetime import UTC, datetime

from pymongo.asynchronous.database import AsyncDatabase

from happ_common.messages import MessageStatus
from happ_common.mongo import MESSAGES, Document


class DeliveryRepository:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._messages = db[MESSAGES]

    async def status(self, channel_id: str, reply_id: str) -> MessageStatus | None:
        doc = await self._messages.find_one(
            {"channel_id": channel_id, "message_id": reply_id}, {"status": 1}
        )
        return doc.get("status") if doc else None

    async def record_attempt(
        self,
        channel_id: str,
        reply_id: str,
        status: MessageStatus,
        *,
        attempt: int,
        status_code: int | None,
        error_code: str | None,
    ) -> None:
        now = datetime.now(UTC)
        fields: Document = {
            "status": status,
            "attempts": attempt,
            "last_status_code": status_code,
            "last_error_code": error_code,
            "updated_at": now,
        }
        if status == "delivered":
            fields["delivered_at"] = now
        await self._messages.update_one(
            {"channel_id": channel_id, "message_id": reply_id}, {"$set": fields}
        )

    async def mark(self, channel_id: str, reply_id: str, status: MessageStatus) -> None:
        await self._messages.update_one(
            {"channel_id": channel_id, "message_id": reply_id},
            {"$set": {"status": status, "updated_at": datetime.now(UTC)}},
        )
