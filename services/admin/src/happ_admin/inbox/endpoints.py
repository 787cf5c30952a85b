"""The operators' inbox and its live updates (SPEC §6a)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import StreamingResponse

from happ_admin.auth import CurrentPrincipal
from happ_admin.conversations.schemas import MessageOut
from happ_admin.deps import Auth, Inbox, Live
from happ_admin.errors import ERRORS, INBOX_CONFLICTS
from happ_admin.inbox.schemas import InboxConversation, InboxOut, OperatorReplyIn
from happ_admin.path_params import SENDER_ID

router = APIRouter(prefix="/api", tags=["inbox"], responses=ERRORS)

CONVERSATION = f"/channels/{{channel_id}}/conversations/{SENDER_ID}"


@router.get("/inbox", summary="Conversations waiting for a person, held by me, held by others")
async def inbox(principal: CurrentPrincipal, service: Inbox) -> InboxOut:
    return await service.inbox(principal)


@router.get(
    "/events",
    summary="Live updates as Server-Sent Events: 'conversation' events as conversations change",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def events(principal: CurrentPrincipal, live: Live, auth: Auth) -> StreamingResponse:
    return StreamingResponse(
        live.stream(principal, auth.current),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.post(CONVERSATION + "/take", summary="Take over a conversation", responses=INBOX_CONFLICTS)
async def take(
    channel_id: str, sender_id: str, principal: CurrentPrincipal, service: Inbox
) -> InboxConversation:
    principal.require_channel(channel_id)
    return await service.take(principal, channel_id, sender_id)


@router.post(
    CONVERSATION + "/hand-back",
    summary="Give a conversation back to the assistant",
    responses=INBOX_CONFLICTS,
)
async def hand_back(
    channel_id: str, sender_id: str, principal: CurrentPrincipal, service: Inbox
) -> InboxConversation:
    principal.require_channel(channel_id)
    return await service.hand_back(principal, channel_id, sender_id)


@router.post(CONVERSATION + "/close", summary="Close a conversation", responses=INBOX_CONFLICTS)
async def close(
    channel_id: str, sender_id: str, principal: CurrentPrincipal, service: Inbox
) -> InboxConversation:
    principal.require_channel(channel_id)
    return await service.close(principal, channel_id, sender_id)


@router.post(
    CONVERSATION + "/read", status_code=204, summary="Mark a conversation's messages as read"
)
async def read(
    channel_id: str, sender_id: str, principal: CurrentPrincipal, service: Inbox
) -> Response:
    principal.require_channel(channel_id)
    await service.read(channel_id, sender_id)
    return Response(status_code=204)


@router.post(
    CONVERSATION + "/messages",
    status_code=202,
    summary="Reply as the operator holding the conversation (delivered like an AI reply)",
    responses=INBOX_CONFLICTS,
)
async def reply(
    channel_id: str,
    sender_id: str,
    body: OperatorReplyIn,
    principal: CurrentPrincipal,
    service: Inbox,
) -> MessageOut:
    principal.require_channel(channel_id)
    return await service.reply(principal, channel_id, sender_id, body)
