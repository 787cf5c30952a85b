"""Bulk recovery routes: start one (admins), follow its progress (members)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from happ_admin.auth import CurrentPrincipal, require_member
from happ_admin.deps import Recoveries
from happ_admin.errors import ERRORS, RECOVERY_CONFLICTS
from happ_admin.recovery.schemas import RecoveryList, RecoveryOut, RecoveryRequest

router = APIRouter(
    prefix="/api", tags=["recovery"], dependencies=[Depends(require_member)], responses=ERRORS
)


@router.post(
    "/channels/{channel_id}/recover",
    status_code=202,
    summary="Send again every reply that ended failed since a time, in each conversation's "
    "order (admins); 200 with the running recovery if one is already running",
    responses={
        200: {"model": RecoveryOut, "description": "A recovery of this channel is running"},
        **RECOVERY_CONFLICTS,
    },
)
async def recover(
    channel_id: str,
    body: RecoveryRequest,
    service: Recoveries,
    principal: CurrentPrincipal,
    response: Response,
) -> RecoveryOut:
    principal.require_admin()
    out, created = await service.start(channel_id, body.since, principal.name)
    if not created:
        response.status_code = 200
    return out


@router.get(
    "/channels/{channel_id}/recoveries",
    summary="A channel's latest recoveries, newest first, with their progress",
)
async def recoveries(
    channel_id: str, service: Recoveries, limit: Annotated[int, Query(ge=1, le=20)] = 5
) -> RecoveryList:
    return RecoveryList(items=await service.recent(channel_id, limit))


@router.get(
    "/channels/{channel_id}/recoveries/{recovery_id}",
    summary="One recovery's progress: the replies it queued and where they stand",
)
async def recovery(channel_id: str, recovery_id: str, service: Recoveries) -> RecoveryOut:
    return await service.get(channel_id, recovery_id)
