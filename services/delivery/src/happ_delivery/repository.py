"""The delivery state of replies, on the reply's message document.

Reads and writes go through batchers: with thousands of replies in flight, each
delivery's status check and status update share round trips with the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from happ_common.batching import Batcher
from happ_common.messages import MessageStatus
from happ_common.mongo import MESSAGES, Document
from happ_common.webhook_client import AttemptOutcome


@dataclass(frozen=True)
class ReplyState:
    status: MessageStatus | None
    attempts: int


@dataclass(frozen=True)
class RetryingReply:
    channel_id: str
    sender_id: str
    reply_id: str
    partition: int


class DeliveryRepository:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._messages = db[MESSAGES]
        self._reads: Batcher[tuple[str, str], ReplyState] = Batcher(
            "delivery_state", self._read_many
        )
        self._writes: Batcher[UpdateOne, None] = Batcher("delivery_update", self._write_many)

    async def state(self, channel_id: str, reply_id: str) -> ReplyState:
        return await self._reads.submit((channel_id, reply_id))

    async def _read_many(self, keys: Sequence[tuple[str, str]]) -> list[ReplyState]:
        by_channel: dict[str, list[str]] = {}
        for channel_id, reply_id in keys:
            by_channel.setdefault(channel_id, []).append(reply_id)
        found: dict[tuple[str, str], Document] = {}
        # One query per channel, equality on channel_id: with ``$in`` on both
        # fields the embedded database scans instead of seeking (7 s against
        # 0.2 s for 500 ids, measured), and every index here leads with channel_id.
        for channel_id, reply_ids in by_channel.items():
            cursor = self._messages.find(
                {"channel_id": channel_id, "message_id": {"$in": reply_ids}},
                {"channel_id": 1, "message_id": 1, "status": 1, "attempts": 1},
            )
            async for d in cursor:
                found[(d["channel_id"], d["message_id"])] = d
        return [
            ReplyState(found[k].get("status"), int(found[k].get("attempts") or 0))
            if k in found
            else ReplyState(None, 0)
            for k in keys
        ]

    async def _write_many(self, ops: Sequence[UpdateOne]) -> list[None]:
        await self._messages.bulk_write(list(ops), ordered=False)
        return [None] * len(ops)

    async def record(
        self,
        channel_id: str,
        reply_id: str,
        status: MessageStatus,
        *,
        attempt: int | None = None,
        outcome: AttemptOutcome | None = None,
        partition: int | None = None,
        next_attempt_at: datetime | None = None,
    ) -> None:
        now = datetime.now(UTC)
        fields: Document = {"status": status, "updated_at": now}
        if attempt is not None and outcome is not None:
            fields |= {
                "attempts": attempt,
                "last_status_code": outcome.status_code,
                "last_error_code": outcome.error_code,
                "last_attempt_at": now,
            }
        if status == "delivered":
            fields["delivered_at"] = now
        if status == "retrying":
            fields |= {"delivery_partition": partition, "next_attempt_at": next_attempt_at}
        await self._writes.submit(
            UpdateOne({"channel_id": channel_id, "message_id": reply_id}, {"$set": fields})
        )

    async def retrying_in(self, partitions: set[int]) -> list[RetryingReply]:
        cursor = self._messages.find(
            {"status": "retrying", "delivery_partition": {"$in": sorted(partitions)}},
            {"channel_id": 1, "sender_id": 1, "message_id": 1, "delivery_partition": 1},
        )
        return [
            RetryingReply(d["channel_id"], d["sender_id"], d["message_id"], d["delivery_partition"])
            async for d in cursor
        ]

    async def drain(self) -> None:
        await self._reads.drain()
        await self._writes.drain()
