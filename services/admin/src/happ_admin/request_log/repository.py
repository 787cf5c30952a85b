"""The request log as the admin reads it: a channel's entries, newest first
(paged by keyset, ``happ_admin.cursors``), one entry, a reply's attempts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from happ_admin.cursors import Keyset, all_of, keyset_after
from happ_common.deliveries import FIRST_ATTEMPT, delivery_id, delivery_of_log_id
from happ_common.ids import message_of_accepted_log_id
from happ_common.messages import ACCEPTED_REQUEST
from happ_common.mongo import DELIVERIES, MESSAGES, REQUEST_LOG, Document
from happ_common.request_log import Direction, LogEntry


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


class RequestLogRepository:
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

    async def ensure_indexes(self) -> None:
        # Message status looks up a message's log entries (its webhook request,
        # its reply's attempts) by id; without this it would scan the channel's log.
        await self._log.create_index(
            [("channel_id", ASCENDING), ("message_id", ASCENDING)], name="channel_message"
        )

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
            self._log.find(all_of(query, status, keyset_after("created_at", "_id", before)))
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
                all_of(
                    found,
                    _under(field, status),
                    keyset_after(prefix + "created_at", prefix + "id", before),
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
