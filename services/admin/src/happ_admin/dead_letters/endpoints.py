"""Dead-letter routes: what the consumers could never handle, and its replay."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from happ_admin.auth import require_admin
from happ_admin.dead_letters.schemas import DeadLetterList, DeadLetterOut
from happ_admin.deps import DeadLetters
from happ_admin.errors import ERRORS

router = APIRouter(
    prefix="/api", tags=["dead letters"], dependencies=[Depends(require_admin)], responses=ERRORS
)


@router.get("/dead-letters", summary="Records a consumer could never handle (newest last)")
async def list_dead_letters(
    service: DeadLetters, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> DeadLetterList:
    return DeadLetterList(items=await service.list(limit))


@router.post(
    "/dead-letters/{dead_letter_id}/replay",
    summary="Publish a dead letter again to the topic it came from",
)
async def replay_dead_letter(dead_letter_id: str, service: DeadLetters) -> DeadLetterOut:
    return await service.replay(dead_letter_id)
