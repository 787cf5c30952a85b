"""The admin's queries on the request log, conversations and messages.

Lists page by keyset, newest first: a cursor is the last item's sort key
``(time, unique id)``, and the next page is everything strictly older. Entries
written meanwhile sort above the cursor, so pages never shift under a reader
the way skip/offset pages do.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from happ_admin.cursors import Keyset
from happ_common.deliveries import (
    FIRST_ATTEMPT,
    DeliveryState,
    DeliveryStates,
    DeliveryStatus,
    delivery_id,
    delivery_of_log_id,
)
from happ_common.ids import conversation_id, message_of_accepted_log_id, output_ids_for
from happ_common.messages import ACCEPTED_REQUEST, WITHOUT_REQUEST, StoredMessage, answered
from happ_common.mongo import CONVERSATIONS, DELIVERIES, MESSAGES, REQUEST_LOG, Document
from happ_common.request_log import Direction, LogEntry


def _older_than(time_field: str, key_field: str, before: Keyset | None) -> Document:
    if before is None:
        return {}
    at, key = before
    return {"$or": [{time_field: {"$lt": at}}, {time_field: at, key_field: {"$lt": key}}]}


def _under(prefix: str, condition: Any) -> Any:
    """A query condition on an entry's fields, on the same fields kept in a
    subdocument (``prefix``); operators and values are left as they are."""
    if isinstance(condition, list):
        return [_under(prefix, c) for c in condition]
    if not isinstance(condition, dict):
        return condition
    return {
        (k if k.startswith("$") else f"{prefix}.{k}"): (
            _under(prefix, v) if k.startswith("$") else v
        )
        for k, v in condition.items()
    }


def _first_attempt(doc: Document) -> LogEntry:
    return LogEntry.model_validate(doc[FIRST_ATTEMPT])


def _newest_first(entries: list[LogEntry]) -> list[LogEntry]:
    return sorted(entries, key=lambda e: (e.created_at, e.id), reverse=True)


def _and(*parts: Document) -> Document:
    parts = tuple(p for p in parts if p)
    if not parts:
        return {}
    return parts[0] if len(parts) == 1 else {"$and": list(parts)}


class AdminRepository:
    """``retention_days``: how long request-log entries are shown. Two kinds of
    entry are kept inside documents that outlive the request log's retention: a
    reply's first attempt in its delivery state (happ_common.deliveries), an
    accepted webhook on the user's message it brought (happ_common.messages).
    Past it they are not shown, until the sweep removes them
    (happ_common.kept_log_retention)."""

    def __init__(self, db: AsyncDatabase[Document], *, retention_days: int = 30) -> None:
        self._log = db[REQUEST_LOG]
        self._delivery_docs = db[DELIVERIES]
        self._retention = timedelta(days=retention_days)
        self._messages = db[MESSAGES]
        self._conversations = db[CONVERSATIONS]
        self._deliveries = DeliveryStates(db)

    async def ensure_indexes(self) -> None:
        # Message status looks up a message's log entries (its webhook request,
        # its reply's attempts) by id; without this it would scan the channel's log.
        await self._log.create_index(
            [("channel_id", ASCENDING), ("message_id", ASCENDING)], name="channel_message"
        )

    # --- request log ---------------------------------------------------------

    async def logs(
        self,
        channel_id: str,
        *,
        direction: Direction | None,
        status: Document,
        since: datetime | None,
        until: datetime | None,
        message_id: str | None,
        before: Keyset | None,
        limit: int,
    ) -> list[LogEntry]:
        query: Document = {"channel_id": channel_id}
        if direction:
            query["direction"] = direction
        if message_id:
            query["message_id"] = message_id
        window: Document = {}
        if since:
            window["$gte"] = since
        if until:
            window["$lt"] = until
        if window:
            query["created_at"] = window
        cursor = (
            self._log.find(_and(query, status, _older_than("created_at", "_id", before)))
            .sort([("created_at", DESCENDING), ("_id", DESCENDING)])
            .limit(limit)
        )
        entries = [LogEntry.model_validate(d) async for d in cursor]
        # Entries kept inside other documents: a reply's first attempt in its
        # delivery state, an accepted webhook on the message it brought.
        kept = [
            (coll, field)
            for coll, field, kind in (
                (self._delivery_docs, FIRST_ATTEMPT, "outgoing"),
                (self._messages, ACCEPTED_REQUEST, "incoming"),
            )
            if direction in (None, kind)
        ]
        for coll, field in kept:
            entries += await self._kept(
                coll, field, channel_id, query=query, status=status, before=before, limit=limit
            )
        return _newest_first(entries)[:limit] if kept else entries

    async def _kept(
        self,
        coll: AsyncCollection[Document],
        field: str,
        channel_id: str,
        *,
        query: Document,
        status: Document,
        before: Keyset | None,
        limit: int,
    ) -> list[LogEntry]:
        """The page's share of the entries kept in ``field`` of ``coll``'s
        documents: the same conditions on the same fields, one level down."""
        floor = self._shown_since()
        since = query.get("created_at", {}).get("$gte", floor)
        window = {**query.get("created_at", {}), "$gte": max(floor, since)}
        found = _under(field, {**query, "created_at": window})
        found["channel_id"] = channel_id
        prefix = f"{field}."
        cursor = (
            coll.find(
                _and(
                    found,
                    _under(field, status),
                    _older_than(prefix + "created_at", prefix + "id", before),
                ),
                {field: 1},
            )
            .sort([(prefix + "created_at", DESCENDING), (prefix + "id", DESCENDING)])
            .limit(limit)
        )
        return [LogEntry.model_validate(d[field]) async for d in cursor]

    def _shown_since(self) -> datetime:
        return datetime.now(UTC) - self._retention

    async def log(self, log_id: str) -> LogEntry | None:
        if (state_id := delivery_of_log_id(log_id)) is not None:
            doc = await self._delivery_docs.find_one(
                {
                    "_id": state_id,
                    f"{FIRST_ATTEMPT}.id": log_id,
                    f"{FIRST_ATTEMPT}.created_at": {"$gte": self._shown_since()},
                },
                {FIRST_ATTEMPT: 1},
            )
            return _first_attempt(doc) if doc else None
        doc = await self._log.find_one({"_id": log_id})
        if doc is not None:
            return LogEntry.model_validate(doc)
        if (message := message_of_accepted_log_id(log_id)) is None:
            return None
        # An accepted webhook's entry, kept on the user's message it brought.
        doc = await self._messages.find_one(
            {
                "channel_id": message[0],
                "message_id": message[1],
                f"{ACCEPTED_REQUEST}.id": log_id,
                f"{ACCEPTED_REQUEST}.created_at": {"$gte": self._shown_since()},
            },
            {ACCEPTED_REQUEST: 1},
        )
        return LogEntry.model_validate(doc[ACCEPTED_REQUEST]) if doc else None

    async def attempts(self, channel_id: str, reply_id: str) -> list[LogEntry]:
        """A reply's attempts, oldest first."""
        cursor = self._log.find(
            {"channel_id": channel_id, "message_id": reply_id, "direction": "outgoing"}
        )
        found = [LogEntry.model_validate(d) async for d in cursor]
        state = await self._delivery_docs.find_one(
            {
                "_id": delivery_id(channel_id, reply_id),
                f"{FIRST_ATTEMPT}.created_at": {"$gte": self._shown_since()},
            },
            {FIRST_ATTEMPT: 1},
        )
        if state is not None:
            found.append(_first_attempt(state))
        return _newest_first(found)[::-1]

    async def accepted_incoming(self, channel_id: str, message_id: str) -> LogEntry | None:
        doc = await self._log.find_one(
            {
                "channel_id": channel_id,
                "message_id": message_id,
                "direction": "incoming",
                "status_code": 200,
            }
        )
        return LogEntry.model_validate(doc) if doc else None

    # --- conversations and messages -----------------------------------------

    async def conversations(
        self, channel_id: str, *, before: Keyset | None, limit: int
    ) -> list[Document]:
        cursor = (
            self._conversations.find(
                _and({"channel_id": channel_id}, _older_than("last_message_at", "_id", before))
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
    ) -> list[StoredMessage]:
        # message_id is unique within a channel, so it breaks ties between
        # messages stored within the same millisecond.
        cursor = (
            self._messages.find(
                _and(
                    {"channel_id": channel_id, "sender_id": sender_id},
                    _older_than("created_at", "message_id", before),
                ),
                WITHOUT_REQUEST,
            )
            .sort([("created_at", DESCENDING), ("message_id", DESCENDING)])
            .limit(limit)
        )
        found = [StoredMessage.model_validate(d) async for d in cursor]
        return await self._with_delivery(await self._answered(channel_id, found))

    async def message(self, channel_id: str, message_id: str) -> StoredMessage | None:
        doc = await self._messages.find_one(
            {"channel_id": channel_id, "message_id": message_id}, WITHOUT_REQUEST
        )
        if doc is None:
            return None
        found = await self._answered(channel_id, [StoredMessage.model_validate(doc)])
        return (await self._with_delivery(found))[0]

    async def _answered(
        self, channel_id: str, messages: list[StoredMessage]
    ) -> list[StoredMessage]:
        """User messages with what came of them, which is stored on their outputs
        (happ_common.messages.answered): those on the page already, the others
        read by their derived ids, one query per page."""
        known = {m.message_id: m for m in messages}
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

    async def _with_delivery(self, messages: list[StoredMessage]) -> list[StoredMessage]:
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


def _delivered(reply: StoredMessage, state: DeliveryState) -> StoredMessage:
    return reply.model_copy(
        update={
            "status": state.shown_status,
            "attempts": state.attempts,
            "last_status_code": state.last_status_code,
            "last_error_code": state.last_error_code,
            "last_attempt_at": state.last_attempt_at,
            "delivered_at": state.delivered_at,
            "next_attempt_at": state.next_attempt_at,
        }
    )
