"""Channel routes: thin, everything else in the services."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from happ_admin.auth import CurrentPrincipal, Principal, require_auth
from happ_admin.channels.schemas import (
    ChannelCreate,
    ChannelList,
    ChannelOut,
    ChannelUpdate,
    ConnectRequest,
    SendTestResult,
)
from happ_admin.deps import Channels, PublicUrl, SendTests
from happ_admin.errors import ERRORS
from happ_common.channels import Channel

router = APIRouter(
    prefix="/api", tags=["channels"], dependencies=[Depends(require_auth)], responses=ERRORS
)


def _out(channel: Channel, public_url: str, principal: Principal) -> ChannelOut:
    return ChannelOut.of(channel, public_url, show_secret=principal.role == "admin")


@router.post("/channels", status_code=201, summary="Create a channel")
async def create_channel(
    body: ChannelCreate, service: Channels, public_url: PublicUrl, principal: CurrentPrincipal
) -> ChannelOut:
    principal.require_admin()
    return ChannelOut.of(await service.create(body), public_url)


@router.get(
    "/channels", summary="List channels (oldest first, by id); an operator's own channels only"
)
async def list_channels(
    service: Channels,
    public_url: PublicUrl,
    principal: CurrentPrincipal,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> ChannelList:
    items, next_cursor = await service.list(cursor, limit, only=principal.channels)
    return ChannelList(
        items=[_out(c, public_url, principal) for c in items], next_cursor=next_cursor
    )


@router.get("/channels/{channel_id}", summary="Get a channel")
async def get_channel(
    channel_id: str, service: Channels, public_url: PublicUrl, principal: CurrentPrincipal
) -> ChannelOut:
    principal.require_channel(channel_id)
    return _out(await service.get(channel_id), public_url, principal)


@router.patch("/channels/{channel_id}", summary="Change a channel's settings (admins)")
async def update_channel(
    channel_id: str,
    body: ChannelUpdate,
    service: Channels,
    public_url: PublicUrl,
    principal: CurrentPrincipal,
) -> ChannelOut:
    principal.require_admin()
    return ChannelOut.of(await service.update(channel_id, body), public_url)


@router.post(
    "/channels/{channel_id}/disconnect",
    summary="Disconnect: the webhook answers 403 and no replies are sent; all data is kept",
)
async def disconnect_channel(
    channel_id: str, service: Channels, public_url: PublicUrl, principal: CurrentPrincipal
) -> ChannelOut:
    principal.require_admin()
    return ChannelOut.of(await service.disconnect(channel_id), public_url)


@router.post(
    "/channels/{channel_id}/connect",
    summary="Connect again: same id, webhook URL, secret, settings and history",
)
async def connect_channel(
    channel_id: str,
    service: Channels,
    public_url: PublicUrl,
    principal: CurrentPrincipal,
    body: ConnectRequest | None = None,
) -> ChannelOut:
    principal.require_admin()
    url = body.outgoing_url if body else None
    return ChannelOut.of(await service.connect(channel_id, url), public_url)


@router.post(
    "/channels/{channel_id}/rotate-secret",
    summary="New HMAC secret; the previous one keeps verifying for 24 h",
)
async def rotate_secret(
    channel_id: str, service: Channels, public_url: PublicUrl, principal: CurrentPrincipal
) -> ChannelOut:
    principal.require_admin()
    return ChannelOut.of(await service.rotate_secret(channel_id), public_url)


@router.post(
    "/channels/{channel_id}/test",
    summary="Send a real signed test request to the outgoing endpoint",
)
async def send_test(
    channel_id: str, tests: SendTests, principal: CurrentPrincipal
) -> SendTestResult:
    principal.require_channel(channel_id)
    return await tests.send(channel_id)
