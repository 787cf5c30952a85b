"""Conversations, their messages, and where one incoming message stands."""

from __future__ import annotations

from happ_admin import cursors
from happ_admin.channels.service import ChannelService
from happ_admin.conversations.repository import ConversationRepository
from happ_admin.conversations.schemas import (
    ConversationOut,
    ConversationPage,
    MessageOut,
    MessagePage,
    MessageStatusOut,
    TrackedStatus,
)
from happ_admin.errors import CONVERSATION_NOT_FOUND, MESSAGE_NOT_FOUND
from happ_admin.request_log.repository import RequestLogRepository
from happ_admin.request_log.schemas import LogEntryOut
from happ_common.errors import HappError
from happ_common.messages import StoredMessage


def message_not_found(message_id: str) -> HappError:
    return MESSAGE_NOT_FOUND(
        f"No message {message_id!r} exists on this channel; use the message_id the webhook "
        "returned.",
    )


def tracked_status(message: StoredMessage, reply: StoredMessage | None) -> TrackedStatus:
    """accepted → replied → delivered | retrying | failed | canceled."""
    if reply is None:
        return "replied" if message.status == "replied" else "accepted"
    if reply.status in ("delivered", "retrying", "failed", "canceled"):
        return reply.status
    return "replied"


class ConversationService:
    def __init__(
        self, repo: ConversationRepository, logs: RequestLogRepository, channels: ChannelService
    ) -> None:
        self._repo = repo
        self._logs = logs
        self._channels = channels

    async def conversations(
        self, channel_id: str, *, cursor: str | None, limit: int
    ) -> ConversationPage:
        before = cursors.decode(cursor)
        await self._channels.get(channel_id)
        found = await self._repo.conversations(channel_id, before=before, limit=limit + 1)
        docs, next_cursor = cursors.page_of(
            found, limit, lambda d: cursors.encode(d["last_message_at"], d["_id"])
        )
        stats = await self._repo.conversation_stats(channel_id, [d["sender_id"] for d in docs])
        items = [
            ConversationOut(
                sender_id=d["sender_id"],
                sender_name=d.get("sender_name"),
                first_message_at=d.get("first_message_at"),
                last_message_at=d.get("last_message_at"),
                message_count=stats.get(d["sender_id"], (0, None))[0],
                last_text=stats.get(d["sender_id"], (0, None))[1],
                state=d.get("state") or "assistant",
                operator=d.get("operator"),
                unread=d.get("unread", 0),
            )
            for d in docs
        ]
        return ConversationPage(items=items, next_cursor=next_cursor)

    async def messages(
        self, channel_id: str, sender_id: str, *, cursor: str | None, limit: int
    ) -> MessagePage:
        before = cursors.decode(cursor)
        await self._channels.get(channel_id)
        if not await self._repo.conversation_exists(channel_id, sender_id):
            raise CONVERSATION_NOT_FOUND(
                f"No conversation with sender {sender_id!r} exists on this channel.",
            )
        found = await self._repo.messages(channel_id, sender_id, before=before, limit=limit + 1)
        found, next_cursor = cursors.page_of(
            found, limit, lambda m: cursors.encode(m.created_at, m.message_id)
        )
        return MessagePage(items=[MessageOut.of(m) for m in found], next_cursor=next_cursor)

    async def status(self, channel_id: str, message_id: str) -> MessageStatusOut:
        await self._channels.get(channel_id)
        stored = await self._repo.message(channel_id, message_id)
        if stored is None:
            return await self._only_in_log(channel_id, message_id)
        message, reply = stored, None
        if stored.role != "user":
            # A reply id leads to the message it answers: that is what is tracked.
            reply = stored
            original = (
                await self._repo.message(channel_id, stored.in_reply_to)
                if stored.in_reply_to
                else None
            )
            message = original or stored
        elif stored.reply_id:
            reply = await self._repo.message(channel_id, stored.reply_id)
        attempts = await self._logs.attempts(channel_id, reply.message_id) if reply else []
        return MessageStatusOut(
            channel_id=channel_id,
            message_id=message.message_id,
            status=tracked_status(message, reply),
            message=MessageOut.of(message),
            reply=MessageOut.of(reply) if reply else None,
            attempts=[LogEntryOut.of(a) for a in attempts],
        )

    async def _only_in_log(self, channel_id: str, message_id: str) -> MessageStatusOut:
        # A message sent without an id exists only on the broker and in the
        # ingress's request log until the assistant stores it (one sent with an
        # id is stored by the ingress as it accepts it).
        entry = await self._logs.accepted_incoming(channel_id, message_id)
        if entry is None:
            raise message_not_found(message_id)
        return MessageStatusOut(
            channel_id=channel_id,
            message_id=message_id,
            status="accepted",
            message=None,
            reply=None,
            attempts=[],
        )
