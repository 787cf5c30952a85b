"""The request log as operators read it: filtered, newest first, paged by cursor."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from happ_admin import cursors
from happ_admin.channels.service import ChannelService
from happ_admin.errors import LOG_NOT_FOUND
from happ_admin.request_log.repository import RequestLogRepository
from happ_admin.request_log.schemas import LogEntryOut, LogPage
from happ_common.errors import INVALID_PAYLOAD, ErrorDetail
from happ_common.mongo import Document
from happ_common.request_log import Direction

_CLASS = re.compile(r"^([1-5])xx$")
_EXACT = re.compile(r"^[1-5][0-9][0-9]$")

STATUS_FILTER_HELP = (
    "one or more of, comma separated: a class (2xx, 4xx, 5xx...), an exact code (404), "
    "'error' (no HTTP status: timeout, unreachable, TLS failure) or 'failed' (anything "
    "but 2xx, 'error' included); empty: every status"
)
_ONE = r"(?:[1-5](?:xx|[0-9][0-9])|error|failed)"
STATUS_FILTER_PATTERN = rf"^(?:{_ONE}(?:,{_ONE})*)?$"


def status_filter(value: str | None) -> Document:
    """The MongoDB condition for a ``status`` query value; {} matches everything."""
    if not value or not value.strip():
        return {}
    conditions: list[Document] = []
    for raw in value.lower().split(","):
        part = raw.strip()
        if match := _CLASS.match(part):
            low = int(match.group(1)) * 100
            conditions.append({"status_code": {"$gte": low, "$lt": low + 100}})
        elif _EXACT.match(part):
            conditions.append({"status_code": int(part)})
        elif part == "error":
            # Null matches a missing field too. Numbers never compare below or
            # above null in MongoDB, so the range conditions skip these entries.
            conditions.append({"status_code": None})
        elif part == "failed":
            conditions.extend(
                [
                    {"status_code": None},
                    {"status_code": {"$lt": 200}},
                    {"status_code": {"$gte": 300}},
                ]
            )
        else:
            raise INVALID_PAYLOAD(
                f"The status filter {part!r} is not understood.",
                [ErrorDetail(field="query.status", problem=STATUS_FILTER_HELP)],
            )
    return conditions[0] if len(conditions) == 1 else {"$or": conditions}


def _aware(at: datetime | None) -> datetime | None:
    if at is None or at.tzinfo is not None:
        return at
    return at.replace(tzinfo=UTC)


class RequestLogService:
    def __init__(self, repo: RequestLogRepository, channels: ChannelService) -> None:
        self._repo = repo
        self._channels = channels

    async def page(
        self,
        channel_id: str,
        *,
        direction: Direction | None,
        status: str | None,
        since: datetime | None,
        until: datetime | None,
        message_id: str | None,
        cursor: str | None,
        limit: int,
    ) -> LogPage:
        condition = status_filter(status)
        before = cursors.decode(cursor)
        await self._channels.get(channel_id)
        entries = await self._repo.logs(
            channel_id,
            direction=direction,
            status=condition,
            since=_aware(since),
            until=_aware(until),
            message_id=message_id,
            before=before,
            limit=limit + 1,
        )
        entries, next_cursor = cursors.page_of(
            entries, limit, lambda e: cursors.encode(e.created_at, e.id)
        )
        return LogPage(items=[LogEntryOut.of(e) for e in entries], next_cursor=next_cursor)

    async def get(self, log_id: str) -> LogEntryOut:
        # Ids are short, but an accepted webhook's names its message (up to 128
        # characters, 512 bytes, in base64: happ_common.ids.accepted_log_id).
        entry = await self._repo.log(log_id) if len(log_id) <= 1_000 else None
        if entry is None:
            raise LOG_NOT_FOUND(f"No request-log entry {log_id!r} exists.")
        return LogEntryOut.of(entry)
