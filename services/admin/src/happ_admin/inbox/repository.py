"""Who holds each conversation, as the operators' inbox reads and changes it.

Every change is one conditional update on the conversation's document, filtered
on the state just read: two operators clicking Take over at once, or an
operator and the assistant's claim of a message (happ_common.conversation_state),
cannot both win.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import datetime

from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from happ_common.conversation_state import PEOPLE_STATES, ConversationDoc
from happ_common.ids import conversation_id
from happ_common.messages import StoredMessage
from happ_common.mongo import CONVERSATIONS, MESSAGES, Document


class InboxRepository:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._conversations = db[CONVERSATIONS]
        self._messages = db[MESSAGES]

    async def get(self, channel_id: str, sender_id: str) -> ConversationDoc | None:
        doc = await self._conversations.find_one({"_id": conversation_id(channel_id, sender_id)})
        return ConversationDoc.model_validate(doc) if doc else None

    async def held(self, channel_ids: Sequence[str] | None, limit: int) -> list[ConversationDoc]:
        """Conversations waiting for or held by a person, most recently changed first."""
        query: Document = {"state": {"$in": list(PEOPLE_STATES)}}
        if channel_ids is not None:
            query["channel_id"] = {"$in": list(channel_ids)}
        cursor = self._conversations.find(query).sort("updated_at", DESCENDING).limit(limit)
        return [ConversationDoc.model_validate(d) async for d in cursor]

    async def changed_since(
        self, since: datetime, after_id: str | None, limit: int
    ) -> list[ConversationDoc]:
        """Conversations changed for the operators (``inbox_at``) after ``since``
        (or at ``since`` with an ``_id`` after ``after_id``: the next page)."""
        query: Document = {"inbox_at": {"$gt": since}}
        if after_id is not None:
            query = {"$or": [query, {"inbox_at": since, "_id": {"$gt": after_id}}]}
        cursor = (
            self._conversations.find(query)
            .sort([("inbox_at", ASCENDING), ("_id", ASCENDING)])
            .limit(limit)
        )
        return [ConversationDoc.model_validate(d) async for d in cursor]

    async def count_waiting(self) -> int:
        return await self._conversations.count_documents({"state": "waiting"})

    async def transition(
        self,
        doc: ConversationDoc,
        fields: Document,
        *,
        unset: Sequence[str] = (),
    ) -> ConversationDoc | None:
        """Applies ``fields`` if the conversation is still in the state ``doc`` read
        (and held by the same operator); the new document, or None if it moved."""
        expected: Document = {
            "_id": doc.id,
            "operator.id": doc.operator.id if doc.operator else None,
            "state": doc.state if doc.state != "assistant" else {"$in": [None, "assistant"]},
        }
        update: Document = {"$set": {**fields, "inbox_at": fields["updated_at"]}}
        if unset:
            update["$unset"] = dict.fromkeys(unset, "")
        new = await self._conversations.find_one_and_update(
            expected, update, return_document=ReturnDocument.AFTER
        )
        return ConversationDoc.model_validate(new) if new else None

    async def restore(self, before: ConversationDoc, after: ConversationDoc, at: datetime) -> None:
        """Undoes a transition whose event could not be queued: every field it set,
        back as it was, if nobody changed the conversation since."""
        fields = {
            k: before.model_dump(include={k}, by_alias=True)[k]
            for k in (
                "state",
                "operator",
                "unread",
                "handoff_at",
                "handoff_trigger",
                "awaiting_operator_since",
                "handed_back_at",
            )
        }
        await self._conversations.update_one(
            {"_id": after.id, "state": after.state, "updated_at": after.updated_at},
            {"$set": {**fields, "updated_at": at, "inbox_at": at}},
        )

    async def mark_read(self, channel_id: str, sender_id: str, at: datetime) -> None:
        await self._conversations.update_one(
            {"_id": conversation_id(channel_id, sender_id), "unread": {"$gt": 0}},
            {"$set": {"unread": 0, "updated_at": at, "inbox_at": at}},
        )

    async def first_reply(self, channel_id: str, sender_id: str) -> datetime | None:
        """Clears the wait for a first operator reply; when it started, if it had."""
        before = await self._conversations.find_one_and_update(
            {
                "_id": conversation_id(channel_id, sender_id),
                "awaiting_operator_since": {"$ne": None},
            },
            {"$set": {"awaiting_operator_since": None}},
            projection={"awaiting_operator_since": 1},
        )
        return before.get("awaiting_operator_since") if before else None

    async def insert_message(self, message: StoredMessage) -> None:
        """The operator's reply, shown at once; the assistant service stores the same
        document when it publishes it, whichever comes first."""
        doc = message.model_dump()
        doc["updated_at"] = doc["created_at"]
        with contextlib.suppress(DuplicateKeyError):  # the assistant stored it first
            await self._messages.insert_one(doc)
