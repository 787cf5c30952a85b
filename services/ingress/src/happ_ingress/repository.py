"""Accepted records: the request-log entry of a webhook accepted with the
integrator's id (``message_id`` or ``Idempotency-Key``) is also its idempotency
record, one document instead of two (issue #14: documents per message).

A record is written once, *after* the broker's ack, by an insert whose ``_id``
(derived from the channel and the key) settles races between repeats: the
request whose insert lands answers ``accepted``, every other one ``duplicate``.
Writing it after the ack (rather than a claim before the publish and a mark
after it) makes it one write per message, and it cannot lose a message: a copy
that crashed before its ack left no record, so its repeat is published as new.
The price is that racing repeats, and a repeat reaching a replica that did not
accept the first copy, reach the broker too; the assistant keys every message
by its id and answers it once (docs/architecture.md).

The entry lives as long as the request log (``HAPP_REQUEST_LOG_RETENTION_DAYS``),
but a key is a repeat only within 24 h (SPEC §3): a record older than that is
superseded by the new message's, its old entry kept under an id of its own.

Records go through a ``Batcher``: concurrent webhooks share one round trip, the
database's per-operation cost being what bounds it (``make bench-db``).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import InsertOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from happ_common.batching import Batcher, Write, Written, bulk_write_outcomes, outcome
from happ_common.mongo import REQUEST_LOG, Document

# How long a key makes a repeat a duplicate (SPEC §3).
REPEAT_WINDOW = timedelta(hours=24)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def record_id(channel_id: str, key: str) -> str:
    """The accepted record's id: a request-log id (``log_`` and hex, safe in a
    URL), the same for every copy of the message."""
    return "log_" + _digest(f"{channel_id}\n{key}")


class AcceptedRecords:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._coll = db[REQUEST_LOG]
        self._records: Batcher[Write, Written] = Batcher("idempotency_records", self._write)

    async def _write(self, ops: Sequence[Write]) -> list[Written]:
        return await bulk_write_outcomes(self._coll, ops)

    async def drain(self) -> None:
        await self._records.drain()

    async def record(self, channel_id: str, key: str, entry: Document, owner: str) -> bool:
        """Store ``entry`` (a request-log document, its ``_id`` set here) as the
        record that the message with this key is on the broker: True if this is
        its first record within the repeat window, False if a copy was recorded
        before. ``owner`` is the request's own token, the same on every retry."""
        doc = {**entry, "_id": record_id(channel_id, key), "owner": owner}
        if outcome(await self._records.submit(InsertOne(doc))):
            return True
        found = await self._coll.find_one({"_id": doc["_id"]})
        if found is None:
            return False  # expired between the two calls: a repeat all the same
        # Our own insert, landed by a batch whose answer was lost and then
        # retried alone, is ours still.
        if found.get("owner") == owner:
            return True
        return await self._supersede(found, doc)

    async def _supersede(self, old: Document, new: Document) -> bool:
        """Replaces a record older than the repeat window by ``new``; True if this
        call did. The old request's entry stays in the log under an id derived
        from it, so racing replicas keep one copy."""
        created: datetime = old["created_at"]
        if created.tzinfo is None:
            created = created.replace(tzinfo=UTC)
        if datetime.now(UTC) - created < REPEAT_WINDOW:
            return False
        kept: dict[str, Any] = {**old, "_id": "log_" + _digest(f"{old['_id']}\n{old.get('owner')}")}
        kept.pop("owner", None)
        with contextlib.suppress(DuplicateKeyError):  # another replica kept it first
            await self._coll.insert_one(kept)
        replaced = await self._coll.replace_one({"_id": old["_id"], "owner": old.get("owner")}, new)
        return replaced.matched_count == 1

    async def complete(self, channel_id: str, key: str, owner: str, fields: Document) -> bool:
        """How the request ended, once it waited for its reply (status, response);
        True if its own record was there to take it."""
        result = await self._coll.update_one(
            {"_id": record_id(channel_id, key), "owner": owner}, {"$set": fields}
        )
        return result.matched_count == 1
