"""Idempotency records: one document per (channel, integrator message id), 24 h TTL.

A record is written once, *after* the broker's ack, by an insert whose unique
``_id`` settles races between repeats: the request whose insert lands answers
``accepted``, every other one ``duplicate``. Writing it after the ack (rather
than a claim before the publish and a mark after it) makes it one write per
message instead of two, and it cannot lose a message: a copy that crashed
before its ack left no record, so its repeat is published as new. The price is
that racing repeats, and a repeat reaching a replica that did not accept the
first copy, reach the broker too; the assistant keys every message by its id
and answers it once (docs/architecture.md).

Records go through a ``Batcher``: concurrent webhooks share one round trip, the
database's per-operation cost being what bounds it (``make bench-db``).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import UTC, datetime

from pymongo import InsertOne
from pymongo.asynchronous.database import AsyncDatabase

from happ_common.batching import Batcher, Write, Written, bulk_write_outcomes, outcome
from happ_common.mongo import IDEMPOTENCY, Document


class IdempotencyRepository:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._coll = db[IDEMPOTENCY]
        self._records: Batcher[Write, Written] = Batcher("idempotency_records", self._write)

    async def _write(self, ops: Sequence[Write]) -> list[Written]:
        return await bulk_write_outcomes(self._coll, ops)

    async def drain(self) -> None:
        await self._records.drain()

    @staticmethod
    def _id(channel_id: str, key: str) -> str:
        return f"{channel_id}\n{key}"

    async def record(self, channel_id: str, key: str) -> bool:
        """Record that the message with this key is on the broker: True if this is
        its first record, False if a copy was recorded before."""
        owner = secrets.token_hex(8)
        written = await self._records.submit(
            InsertOne(
                {
                    "_id": self._id(channel_id, key),
                    # Read by replicas of the version before this one during a
                    # rolling deploy: to them, a recorded message is accepted.
                    "accepted": True,
                    "owner": owner,
                    "created_at": datetime.now(UTC),
                }
            )
        )
        if outcome(written):
            return True
        # Our own insert, landed by a batch whose answer was lost and then
        # retried alone, is ours still.
        doc = await self._coll.find_one({"_id": self._id(channel_id, key)}, {"owner": 1})
        return doc is not None and doc.get("owner") == owner
