"""Accepted records: a webhook accepted with the integrator's id (``message_id``
or ``Idempotency-Key``) is recorded by storing the user's message itself, with
the request's log entry kept on it (``happ_common.messages``): one document for
the message, its idempotency record and its log entry (issue #14: documents per
message).

A record is written once, *after* the broker's ack, by an insert that the
unique ``(channel_id, message_id)`` index settles races between repeats with:
the request whose insert lands answers ``accepted``, every other one
``duplicate``.
Writing it after the ack (rather than a claim before the publish and a mark
after it) makes it one write per message, and it cannot lose a message: a copy
that crashed before its ack left no record, so its repeat is published as new.
The price is that racing repeats, and a repeat reaching a replica that did not
accept the first copy, reach the broker too; the assistant keys every message
by its id and answers it once (docs/architecture.md).

The assistant may store the message first, from the event (the record is
late): it stores the request's token with it (``InboundMessage.accepted_by``),
so the request still recognises its own copy and adds its log entry to it.

A key is a repeat only within 24 h (SPEC §3): a request with a key accepted
longer ago becomes the message's accepted one, the older request's entry
moving to the request log. A message is stored once per id, so the assistant
finds the earlier message's reply and sends that again.

Records go through a ``Batcher``: concurrent webhooks share one round trip, the
database's per-operation cost being what bounds it (``make bench-db``).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from pymongo import InsertOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from happ_common.batching import Batcher, Write, Written, bulk_write_outcomes, outcome
from happ_common.ids import accepted_log_id
from happ_common.messages import ACCEPTED_BY, ACCEPTED_REQUEST
from happ_common.mongo import MESSAGES, REQUEST_LOG, Document

# How long a key makes a repeat a duplicate (SPEC §3).
REPEAT_WINDOW = timedelta(hours=24)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class AcceptedRecords:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._messages = db[MESSAGES]
        self._log = db[REQUEST_LOG]
        self._records: Batcher[Write, Written] = Batcher("idempotency_records", self._write)

    async def _write(self, ops: Sequence[Write]) -> list[Written]:
        return await bulk_write_outcomes(self._messages, ops)

    async def drain(self) -> None:
        await self._records.drain()

    async def record(self, message: Document, entry: Document) -> bool:
        """Store ``message`` (``happ_common.messages.user_message_document``, with
        this request's token) carrying ``entry`` (its request-log document) as the
        record that the message is on the broker: True if this is its first
        record within the repeat window (the entry is then written), False if a
        copy was recorded before."""
        owner = message[ACCEPTED_BY]
        kept = {k: v for k, v in entry.items() if k != "_id"}
        kept["id"] = accepted_log_id(message["channel_id"], message["message_id"])
        doc = {**message, ACCEPTED_REQUEST: kept}
        if outcome(await self._records.submit(InsertOne(doc))):
            return True
        found = await self._messages.find_one(
            {"channel_id": message["channel_id"], "message_id": message["message_id"]},
            {
                ACCEPTED_BY: 1,
                "created_at": 1,
                ACCEPTED_REQUEST: 1,
                "channel_id": 1,
                "message_id": 1,
            },
        )
        if found is None:
            return False  # gone between the two calls: a repeat all the same
        mine = found.get(ACCEPTED_BY) == owner
        if mine and ACCEPTED_REQUEST in found:
            return True  # our own insert, landed by a batch whose answer was lost
        if mine or await self._stored_before_records(found):
            # The assistant stored it first: from our event, or (a rolling deploy)
            # without a token, which replicas racing on a repeat settle here.
            claimed = await self._messages.update_one(
                {
                    "_id": found["_id"],
                    ACCEPTED_BY: found.get(ACCEPTED_BY),
                    ACCEPTED_REQUEST: {"$exists": False},
                },
                {"$set": {ACCEPTED_REQUEST: kept, ACCEPTED_BY: owner}},
            )
            if claimed.matched_count == 1:
                return True
            now = await self._messages.find_one({"_id": found["_id"]}, {ACCEPTED_BY: 1})
            return now is not None and now.get(ACCEPTED_BY) == owner
        return await self._supersede(found, owner, kept)

    async def _stored_before_records(self, found: Document) -> bool:
        """A message stored by an assistant from before accepted records (a rolling
        deploy, which updates the assistants first): without a token, and with no
        request-log record of the old kind (same id) saying a copy was accepted."""
        if ACCEPTED_BY in found or ACCEPTED_REQUEST in found:
            return False
        old_record = "log_" + _digest(f"{found['channel_id']}\n{found['message_id']}")
        return await self._log.find_one({"_id": old_record}, {"_id": 1}) is None

    async def _supersede(self, old: Document, owner: str, kept: Document) -> bool:
        """Makes this request the message's accepted one when the one before was
        accepted longer than the repeat window ago; True if this call did. The
        older request's entry moves to the request log under an id derived from
        it, so racing replicas keep one copy."""
        previous: Document | None = old.get(ACCEPTED_REQUEST)
        accepted: datetime = previous["created_at"] if previous else old["created_at"]
        if accepted.tzinfo is None:
            accepted = accepted.replace(tzinfo=UTC)
        if datetime.now(UTC) - accepted < REPEAT_WINDOW:
            return False
        if previous is not None:
            moved = {k: v for k, v in previous.items() if k != "id"}
            moved["_id"] = "log_" + _digest(f"{previous['id']}\n{old.get(ACCEPTED_BY)}")
            with contextlib.suppress(DuplicateKeyError):  # another replica moved it first
                await self._log.insert_one(moved)
        replaced = await self._messages.update_one(
            {"_id": old["_id"], ACCEPTED_BY: old.get(ACCEPTED_BY)},
            {"$set": {ACCEPTED_BY: owner, ACCEPTED_REQUEST: kept}},
        )
        return replaced.matched_count == 1

    async def complete(
        self, channel_id: str, message_id: str, owner: str, fields: Document
    ) -> bool:
        """How the request ended, once it waited for its reply (status, response);
        True if its own record was there to take it."""
        result = await self._messages.update_one(
            {
                "channel_id": channel_id,
                "message_id": message_id,
                ACCEPTED_BY: owner,
                ACCEPTED_REQUEST: {"$exists": True},
            },
            {"$set": {f"{ACCEPTED_REQUEST}.{k}": v for k, v in fields.items()}},
        )
        return result.matched_count == 1
