"""Conversation, message-status and resend routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from happ_admin.auth import require_member
from happ_admin.conversations.schemas import ConversationPage, MessagePage, MessageStatusOut
from happ_admin.cursors import Cursor
from happ_admin.deps import Conversations, Resends
from happ_admin.errors import ERRORS, RESEND_CONFLICTS
from happ_admin.path_params import SENDER_ID

router = APIRouter(
    prefix="/api", tags=["conversations"], dependencies=[Depends(require_member)], responses=ERRORS
)

Limit = Annotated[int, Query(ge=1, le=200)]


@router.get(
    "/channels/{channel_id}/conversations",
    summary="A channel's conversations, most recently active first",
)
async def conversations(
    channel_id: str, service: Conversations, limit: Limit = 50, cursor: Cursor = None
) -> ConversationPage:
    return await service.conversations(channel_id, cursor=cursor, limit=limit)


@router.get(
    f"/channels/{{channel_id}}/conversations/{SENDER_ID}/messages",
    summary="Both sides of a conversation, newest first, with each reply's delivery status",
)
async def conversation_messages(
    channel_id: str,
    sender_id: str,
    service: Conversations,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> MessagePage:
    return await service.messages(channel_id, sender_id, cursor=cursor, limit=limit)


@router.get(
    "/channels/{channel_id}/messages/{message_id:path}",
    summary="Where an incoming message is, with its reply and the reply's delivery attempts",
)
async def message_status(
    channel_id: str, message_id: str, service: Conversations
) -> MessageStatusOut:
    return await service.status(channel_id, message_id)


@router.post(
    "/channels/{channel_id}/messages/{message_id:path}/resend",
    status_code=202,
    summary="Deliver a delivered, failed or canceled reply again, as a new series",
    responses=RESEND_CONFLICTS,
)
async def resend(channel_id: str, message_id: str, resender: Resends) -> MessageStatusOut:
    return await resender.resend(channel_id, message_id)
