"""The admin API routes: thin, everything else in the services."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from happ_admin.auth import require_token
from happ_admin.schemas import ChannelCreate, ChannelList, ChannelOut, ChannelUpdate, ConnectRequest
from happ_admin.service import ChannelService
from happ_common.errors import ErrorBody
from happ_common.settings import HappSettings

router = APIRouter(
    prefix="/api",
    dependencies=[Depends(require_token)],
    responses={401: {"model": ErrorBody}, 404: {"model": ErrorBody}, 422: {"model": ErrorBody}},
)


def _service(request: Request) -> ChannelService:
    service: ChannelService = request.app.state.channels
    return service


def _public_url(request: Request) -> str:
    happ: HappSettings = request.app.state.happ
    return happ.public_url


Service = Annotated[ChannelService, Depends(_service)]
PublicUrl = Annotated[str, Depends(_public_url)]


@router.post("/channels", status_code=201)
async def create_channel(
    body: ChannelCreate, service: Service, public_url: PublicUrl
) -> ChannelOut:
    return ChannelOut.of(await service.create(body), public_url)


@router.get("/channels")
async def list_channels(
    service: Service,
    public_url: PublicUrl,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> ChannelList:
    items, next_cursor = await service.list(cursor, limit)
    return ChannelList(items=[ChannelOut.of(c, public_url) for c in items], next_cursor=next_cursor)


@router.get("/channels/{channel_id}")
async def get_channel(channel_id: str, service: Service, public_url: PublicUrl) -> ChannelOut:
    return ChannelOut.of(await service.get(channel_id), public_url)


@router.patch("/channels/{channel_id}")
async def update_channel(
    channel_id: str, body: ChannelUpdate, service: Service, public_url: PublicUrl
) -> ChannelOut:
    return ChannelOut.of(await service.update(channel_id, body), public_url)


@router.post("/channels/{channel_id}/disconnect")
async def disconnect_channel(
    channel_id: str, service: Service, public_url: PublicUrl
) -> ChannelOut:
    return ChannelOut.of(await service.disconnect(channel_id), public_url)


@router.post("/channels/{channel_id}/connect")
async def connect_channel(
    channel_id: str, service: Service, public_url: PublicUrl, body: ConnectRequest | None = None
) -> ChannelOut:
    url = body.outgoing_url if body else None
    return ChannelOut.of(await service.connect(channel_id, url), public_url)


@router.post("/channels/{channel_id}/rotate-secret")
async def rotate_secret(channel_id: str, service: Service, public_url: PublicUrl) -> ChannelOut:
    return ChannelOut.of(await service.rotate_secret(channel_id), public_url)
