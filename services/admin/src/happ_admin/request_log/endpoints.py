"""Request-log routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from happ_admin.auth import CurrentPrincipal, require_member
from happ_admin.cursors import Cursor
from happ_admin.deps import Logs
from happ_admin.errors import ERRORS
from happ_admin.instant import Instant
from happ_admin.request_log.schemas import LogEntryOut, LogPage
from happ_admin.request_log.service import STATUS_FILTER_HELP, STATUS_FILTER_PATTERN
from happ_common.request_log import Direction

router = APIRouter(
    prefix="/api", tags=["request log"], dependencies=[Depends(require_member)], responses=ERRORS
)


@router.get("/channels/{channel_id}/logs", summary="A channel's request log, newest first")
async def channel_logs(
    channel_id: str,
    logs: Logs,
    *,
    direction: Direction | None = None,
    status: Annotated[
        str | None,
        Query(max_length=100, pattern=STATUS_FILTER_PATTERN, description=STATUS_FILTER_HELP),
    ] = None,
    since: Annotated[Instant | None, Query(description="entries at or after (RFC 3339)")] = None,
    until: Annotated[Instant | None, Query(description="entries before (RFC 3339)")] = None,
    message_id: Annotated[
        str | None, Query(max_length=200, description="an incoming message's or a reply's id")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Cursor = None,
) -> LogPage:
    return await logs.page(
        channel_id,
        direction=direction,
        status=status,
        since=since,
        until=until,
        message_id=message_id,
        cursor=cursor,
        limit=limit,
    )


@router.get("/logs/{log_id}", summary="One request-log entry")
async def log_entry(log_id: str, logs: Logs, principal: CurrentPrincipal) -> LogEntryOut:
    entry = await logs.get(log_id)
    principal.require_channel(entry.channel_id)
    return entry
