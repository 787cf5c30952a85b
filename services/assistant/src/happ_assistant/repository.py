"""The assistant's reads and writes of conversations, batched across messages.

Hundreds of messages are in flight at once and the embedded database does far
fewer single operations per second than documents per second in one
``bulk_write`` (docs/architecture.md, "Measured numbers behind the choices"), so
no call here is a round trip of its own: each goes through a ``Batcher``
that gathers what concurrent messages submit within a few milliseconds into one
call. Callers still await their own write before moving on, so a message's
offset is committed only after its documents are durable.

Writes are idempotent: a message document is created only if none has its
``(channel_id, message_id)`` (unique index), so a message redelivered by Kafka
finds its documents there (the service reads them first; an insert that finds
one returns ``False``). A user's message is usually there already, stored by
the ingress as its accepted record (happ_common.messages). That
is a plain insert whose duplicate-key error means "already there", not an
upsert with ``$setOnInsert``: the guarantee is the same, and in one bulk the
embedded database inserts several times more message documents per second than
it upserts (its CPU per reply, not the assistant's, bounds the benchmark).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime

from pymongo import DESCENDING, InsertOne, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from happ_common.batching import Batcher, Write, Written, bulk_write_outcomes, outcome
from happ_common.conversation_state import (
    ANSWER_TRIGGERS,
    ASSISTANT_STATES,
    ConversationDoc,
    HandoffTrigger,
    claim_filter,
    claim_update,
    waiting_fields,
)
from happ_common.ids import conversation_id
from happ_common.messages import (
    WITHOUT_REQUEST,
    Handling,
    StoredMessage,
    all_answered,
    conversation_touch,
    handled,
    message_document,
)
from happ_common.mongo import CONVERSATIONS, MESSAGES, Document

HistoryQuery = tuple[str, str, int]  # channel_id, sender_id, newest messages wanted
# The messages read, oldest first, and whether they are the whole conversation.
Loaded = tuple[list[StoredMessage], bool]


class ConversationRepository:
    def __init__(
        self, db: AsyncDatabase[Document], *, batch_wait_s: float = 0.005, batch_max: int = 500
    ) -> None:
        self._messages = db[MESSAGES]
        self._conversations = db[CONVERSATIONS]
        wait, most = batch_wait_s, batch_max
        self._reply_writes: Batcher[Write, Written] = Batcher(
            "assistant_reply_writes", self._write_messages, max_batch=most, max_wait_s=wait
        )
        self._incoming_writes: Batcher[Write, Written] = Batcher(
            "assistant_incoming_writes", self._write_messages, max_batch=most, max_wait_s=wait
        )
        self._conversation_writes: Batcher[Write, Written] = Batcher(
            "assistant_conversation_writes",
            self._write_conversations,
            max_batch=most,
            max_wait_s=wait,
        )
        self._message_reads: Batcher[tuple[str, str], StoredMessage | None] = Batcher(
            "assistant_message_reads", self._read_messages, max_batch=most, max_wait_s=wait
        )
        self._history_reads: Batcher[HistoryQuery, Loaded | None] = Batcher(
            "assistant_history_reads", self._read_histories, max_batch=most, max_wait_s=wait
        )
        self._state_reads: Batcher[str, ConversationDoc | None] = Batcher(
            "assistant_state_reads", self._read_states, max_batch=most, max_wait_s=wait
        )

    # -- what the service calls ----------------------------------------------------

    async def insert_incoming(self, doc: Document) -> bool:
        """Store a user's message (``happ_common.messages.user_message_document``)
        unless it is stored already; ``True`` if this call stored it. Its own
        batches: the first write of a message, which gates its LLM call, does not
        queue behind the larger batches of replies."""
        return outcome(await self._incoming_writes.submit(InsertOne(doc)))

    async def insert_reply(self, message: StoredMessage) -> bool:
        """Store a reply unless one with its id is stored already; ``True`` if this call
        stored it."""
        return outcome(await self._reply_writes.submit(InsertOne(message_document(message))))

    async def touch_conversation(
        self,
        channel_id: str,
        sender_id: str,
        sender_name: str | None,
        at: datetime,
        last_text: str | None = None,
        *,
        for_people: bool = False,
    ) -> None:
        query, update = conversation_touch(channel_id, sender_id, sender_name, at, last_text)
        if for_people:
            update["$set"]["inbox_at"] = update["$set"]["updated_at"]
        outcome(await self._conversation_writes.submit(UpdateOne(query, update, upsert=True)))

    async def get(self, channel_id: str, message_id: str) -> StoredMessage | None:
        return await self._message_reads.submit((channel_id, message_id))

    async def mark_handled(self, channel_id: str, message_id: str, handling: Handling) -> None:
        """Records what the filters decided for a user's message that got no AI reply."""
        outcome(
            await self._reply_writes.submit(
                UpdateOne(
                    {"channel_id": channel_id, "message_id": message_id},
                    {"$set": {"handling": handling.model_dump(), "updated_at": datetime.now(UTC)}},
                )
            )
        )

    # -- who holds the conversation (happ_common.conversation_state) ---------------
    # Read fresh for every message of a channel with operators: an operator's Take
    # over must silence the assistant for messages already queued. Changed only by
    # single conditional updates, not batched, because each caller must learn
    # whether its own update matched.

    async def state(self, channel_id: str, sender_id: str) -> ConversationDoc | None:
        return await self._state_reads.submit(conversation_id(channel_id, sender_id))

    async def claim(
        self,
        channel_id: str,
        sender_id: str,
        message_id: str,
        handoff: HandoffTrigger | None = None,
    ) -> tuple[bool, HandoffTrigger | None]:
        """Whether the assistant may answer ``message_id`` (no person holds the
        conversation), and the handoff that goes with the answer. With ``handoff``
        the same write moves the conversation to ``waiting``.

        A message claimed already (a redelivery, or its partition's previous owner)
        changes nothing: the first claim's handoff stands, whatever this answer says.
        """
        result = await self._conversations.update_one(
            claim_filter(channel_id, sender_id),
            claim_update(message_id, datetime.now(UTC), handoff),
        )
        if result.matched_count == 1:
            return True, handoff
        doc = await self._conversations.find_one(
            {"_id": conversation_id(channel_id, sender_id), "claim": message_id},
            {"state": 1, "handoff_by": 1, "handoff_trigger": 1},
        )
        if doc is None:
            return False, None  # a person has it
        trigger = doc.get("handoff_trigger") if doc.get("handoff_by") == message_id else None
        if doc.get("state") == "waiting" and trigger in ANSWER_TRIGGERS:
            return True, trigger
        # Claimed before, then taken by a person: theirs now.
        return doc.get("state") in ASSISTANT_STATES, None

    async def to_operators(
        self, channel_id: str, sender_id: str, trigger: HandoffTrigger, message_id: str
    ) -> bool:
        """Moves the conversation to ``waiting`` unless a person has it already;
        ``True`` if ``message_id`` moved it, now or before a crash (the user is then
        told of the handoff)."""
        result = await self._conversations.update_one(
            {
                "_id": conversation_id(channel_id, sender_id),
                "$or": [
                    {"state": {"$in": ASSISTANT_STATES}},
                    {"state": "waiting", "handoff_by": message_id},
                ],
            },
            {"$set": waiting_fields(trigger, datetime.now(UTC), message_id)},
        )
        return result.matched_count == 1

    async def unread(
        self, channel_id: str, sender_id: str, message_id: str, text: str, at: datetime
    ) -> None:
        """One more message for the operators to read: counted once, should its
        handling be retried."""
        now = datetime.now(UTC)
        await self._conversations.update_one(
            {"_id": conversation_id(channel_id, sender_id), "unread_last": {"$ne": message_id}},
            {
                "$inc": {"unread": 1},
                "$max": {"last_message_at": at},
                "$set": {
                    "updated_at": now,
                    "inbox_at": now,
                    "last_text": text[:200],
                    "unread_last": message_id,
                },
            },
        )

    async def recent(self, channel_id: str, sender_id: str, limit: int) -> Loaded | None:
        """The newest ``limit`` handled messages of a conversation, oldest first, with
        any not handled yet among them, and whether that is all of it (``_newest``);
        ``None`` when the conversation has no document yet (so it has no messages
        either)."""
        return await self._history_reads.submit((channel_id, sender_id, limit))

    async def drain(self) -> None:
        for batcher in (
            self._incoming_writes,
            self._reply_writes,
            self._conversation_writes,
            self._message_reads,
            self._history_reads,
            self._state_reads,
        ):
            await batcher.drain()

    # -- the batched calls ---------------------------------------------------------

    async def _write_messages(self, ops: Sequence[Write]) -> list[Written]:
        return await bulk_write_outcomes(self._messages, ops)

    async def _write_conversations(self, ops: Sequence[Write]) -> list[Written]:
        return await bulk_write_outcomes(self._conversations, ops)

    async def _read_messages(self, keys: Sequence[tuple[str, str]]) -> list[StoredMessage | None]:
        by_channel: dict[str, set[str]] = defaultdict(set)
        for channel_id, message_id in keys:
            by_channel[channel_id].add(message_id)
        # One indexed $in per channel: the embedded database answers an $or of
        # several (channel, id) pairs with a scan.
        found: dict[tuple[str, str], StoredMessage] = {}
        for docs in await asyncio.gather(
            *(
                self._messages.find(
                    {"channel_id": c, "message_id": {"$in": sorted(ids)}}, WITHOUT_REQUEST
                ).to_list(None)
                for c, ids in by_channel.items()
            )
        ):
            for doc in docs:
                m = StoredMessage.model_validate(doc)
                found[(m.channel_id, m.message_id)] = m
        return [found.get(k) for k in keys]

    async def _read_states(self, ids: Sequence[str]) -> list[ConversationDoc | None]:
        docs = await self._conversations.find({"_id": {"$in": list(set(ids))}}).to_list(None)
        found = {d["_id"]: ConversationDoc.model_validate(d) for d in docs}
        return [found.get(i) for i in ids]

    async def _read_histories(self, queries: Sequence[HistoryQuery]) -> list[Loaded | None]:
        # Most conversations an instance meets are new: one read of the
        # conversations collection finds those with a document, and only they cost
        # a (bounded, indexed) read of their newest messages.
        ids = list({conversation_id(c, s) for c, s, _ in queries})
        existing = {
            d["_id"]
            for d in await self._conversations.find({"_id": {"$in": ids}}, {"_id": 1}).to_list(None)
        }
        wanted = [q for q in queries if conversation_id(q[0], q[1]) in existing]
        loaded = await asyncio.gather(*(self._newest(c, s, n) for c, s, n in wanted))
        histories = dict(zip(wanted, loaded, strict=True))
        return [histories.get(q) for q in queries]

    async def _newest(self, channel_id: str, sender_id: str, limit: int) -> Loaded:
        """The newest ``limit`` handled messages, with those not handled yet among
        them (user messages the ingress stored ahead, waiting their turn), and
        whether that is the whole conversation: the waiting ones are read past,
        so they cannot crowd the history out of the window."""
        if limit <= 0:
            return [], True
        want = limit
        while True:
            docs = (
                await self._messages.find(
                    {"channel_id": channel_id, "sender_id": sender_id}, WITHOUT_REQUEST
                )
                .sort([("created_at", DESCENDING), ("_id", DESCENDING)])
                .limit(want)
                .to_list(None)
            )
            # What came of each user message is on its outputs (happ_common.messages):
            # the rate window is seeded from it.
            messages = all_answered([StoredMessage.model_validate(d) for d in reversed(docs)])
            if len(docs) < want:
                return messages, True
            waiting = sum(not handled(m) for m in messages)
            if want - waiting >= limit or want >= limit + _MAX_WAITING:
                return messages, False
            # Doubling: a backlog of waiting messages costs a few reads, not one per
            # ``limit`` of them.
            want = min(max(limit + waiting, 2 * want), limit + _MAX_WAITING)


# Past this many waiting messages a load stops reading: the conversation is held
# with fewer older turns than asked, and read again until it has them.
_MAX_WAITING = 1_000
