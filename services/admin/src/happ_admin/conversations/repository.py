"""Conversations and their messages as the admin reads them, each reply with
its delivery state; and the claim that starts a reply's delivery again."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase

from happ_admin.cursors import Keyset, all_of, keyset_after
from happ_common.deliveries import DeliveryState, DeliveryStates, DeliveryStatus
from happ_common.ids import conversation_id, output_ids_for
from happ_common.messages import WITHOUT_REQUEST, StoredMessage, answered
from happ_common.mongo import CONVERSATIONS, MESSAGES, Document


class ShownMessage(StoredMessage):
    """A message as the admin shows it: a reply with where its delivery stands,
    read from ``deliveries`` (the delivery service's; happ_common.deliveries)
    and never stored with the message. A message read without a state (a user's,
    or a reply not attempted yet) shows the defaults, or the values an old
    document kept itself."""

    attempts: int = 0
    last_status_code: int | None = None
    last_error_code: str | None = None


class ConversationRepository:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._messages = db[MESSAGES]
        self._conversations = db[CONVERSATIONS]
        self._deliveries = DeliveryStates(db)

    async def conversations(
        self, channel_id: str, *, before: Keyset | None, limit: int
    ) -> list[Document]:
        cursor = (
            self._conversations.find(
                all_of({"channel_id": channel_id}, keyset_after("last_message_at", "_id", before))
            )
            .sort([("last_message_at", DESCENDING), ("_id", DESCENDING)])
            .limit(limit)
        )
        return await cursor.to_list(None)

    async def conversation_stats(
        self, channel_id: str, sender_ids: Sequence[str]
    ) -> dict[str, tuple[int, str | None]]:
        """Per sender: number of messages and the latest one's text (one query per page)."""
        if not sender_ids:
            return {}
        cursor = await self._messages.aggregate(
            [
                {"$match": {"channel_id": channel_id, "sender_id": {"$in": list(sender_ids)}}},
                {"$sort": {"created_at": ASCENDING}},
                {
                    "$group": {
                        "_id": "$sender_id",
                        "count": {"$sum": 1},
                        "last_text": {"$last": "$text"},
                    }
                },
            ]
        )
        return {d["_id"]: (int(d["count"]), d.get("last_text")) async for d in cursor}

    async def conversation_exists(self, channel_id: str, sender_id: str) -> bool:
        found_conversation = await self._conversations.find_one(
            {"_id": conversation_id(channel_id, sender_id)}, {"_id": 1}
        )
        if found_conversation is not None:
            return True
        # The conversation document is written after the first reply; the
        # user's message is stored before that.
        found = await self._messages.find_one(
            {"channel_id": channel_id, "sender_id": sender_id}, {"_id": 1}
        )
        return found is not None

    async def messages(
        self, channel_id: str, sender_id: str, *, before: Keyset | None, limit: int
    ) -> list[ShownMessage]:
        # message_id is unique within a channel, so it breaks ties between
        # messages stored within the same millisecond.
        cursor = (
            self._messages.find(
                all_of(
                    {"channel_id": channel_id, "sender_id": sender_id},
                    keyset_after("created_at", "message_id", before),
                ),
                WITHOUT_REQUEST,
            )
            .sort([("created_at", DESCENDING), ("message_id", DESCENDING)])
            .limit(limit)
        )
        found = [ShownMessage.model_validate(d) async for d in cursor]
        return await self._with_delivery(await self._answered(channel_id, found))

    async def message(self, channel_id: str, message_id: str) -> ShownMessage | None:
        doc = await self._messages.find_one(
            {"channel_id": channel_id, "message_id": message_id}, WITHOUT_REQUEST
        )
        if doc is None:
            return None
        found = await self._answered(channel_id, [ShownMessage.model_validate(doc)])
        return (await self._with_delivery(found))[0]

    async def _answered(self, channel_id: str, messages: list[ShownMessage]) -> list[ShownMessage]:
        """User messages with what came of them, which is stored on their outputs
        (happ_common.messages.answered): those on the page already, the others
        read by their derived ids, one query per page."""
        known: dict[str, StoredMessage] = {m.message_id: m for m in messages}
        wanted = [
            output_id
            for m in messages
            if m.role == "user" and m.reply_id is None
            for output_id in output_ids_for(channel_id, m.message_id)
            if output_id not in known
        ]
        if wanted:
            async for d in self._messages.find(
                {"channel_id": channel_id, "message_id": {"$in": wanted}}
            ):
                output = StoredMessage.model_validate(d)
                known[output.message_id] = output
        return [answered(m, known) for m in messages]

    async def _with_delivery(self, messages: list[ShownMessage]) -> list[ShownMessage]:
        """Replies with their delivery state (kept in ``deliveries``, not on the
        message document: see happ_common.deliveries)."""
        keys = [(m.channel_id, m.message_id) for m in messages if m.role != "user"]
        states = await self._deliveries.many(keys)
        return [
            _delivered(m, states[(m.channel_id, m.message_id)])
            if (m.channel_id, m.message_id) in states
            else m
            for m in messages
        ]

    async def claim_for_resend(
        self, channel_id: str, reply_id: str, from_states: Sequence[DeliveryStatus], now: datetime
    ) -> DeliveryState | None:
        """Move a finished reply back to ``pending``; the previous state, or None
        if the reply was not in one of ``from_states`` (a concurrent resend won)."""
        return await self._deliveries.claim_for_resend(channel_id, reply_id, from_states, now)

    async def restore_delivery(
        self, channel_id: str, reply_id: str, previous: DeliveryState, now: datetime
    ) -> None:
        await self._deliveries.restore(channel_id, reply_id, previous, now)


def _delivered(reply: ShownMessage, state: DeliveryState) -> ShownMessage:
    return reply.model_copy(
        update={
            "status": state.shown_status,
            "attempts": state.attempts,
            "last_status_code": state.last_status_code,
            "last_error_code": state.last_error_code,
        }
    )
