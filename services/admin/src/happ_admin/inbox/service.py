"""The operators' inbox: take over, hand back, close, read, and reply (SPEC §6a).

The state changes here, at once, in the conversation's document (so messages
already queued find a person holding it and the assistant stays silent); what
the user is told, and an operator's reply, travel as a ``ConversationCommand``
through the conversation's own partition of ``inbound.messages``, so they reach
the user in order with the AI replies around them, through the same signed,
retried, logged delivery.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime

from prometheus_client import Histogram

from happ_admin.auth import Principal
from happ_admin.channels.service import ChannelService
from happ_admin.conversations.repository import ConversationRepository, ShownMessage
from happ_admin.conversations.schemas import MessageOut
from happ_admin.errors import (
    CONVERSATION_CHANGED,
    CONVERSATION_HELD,
    CONVERSATION_NOT_FOUND,
    HANDOFF_DISABLED,
    NOT_HOLDING,
)
from happ_admin.inbox.repository import InboxRepository
from happ_admin.inbox.schemas import InboxConversation, InboxOut, OperatorReplyIn
from happ_common.channels import Channel
from happ_common.conversation_state import HANDOFFS, ConversationDoc
from happ_common.errors import HappError, invalid_payload, service_unavailable
from happ_common.events import Attachment, CommandType, ConversationCommand
from happ_common.ids import conversation_key
from happ_common.kafka import EventPublisher, PublishFailed
from happ_common.messages import StoredMessage
from happ_common.mongo import Document
from happ_common.topics import INBOUND_MESSAGES

FIRST_REPLY = Histogram(
    "happ_operator_first_reply_seconds",
    "From a handoff to the first operator reply in the conversation",
    buckets=(5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600),
)
INBOX_LIMIT = 200
_OPERATOR_NAMESPACE = uuid.UUID("0b6f7f0e-2d0e-4d57-9a43-5f4a3c7e9b21")


def conversation_not_found(sender_id: str) -> HappError:
    return CONVERSATION_NOT_FOUND(
        f"No conversation with sender {sender_id!r} exists on this channel.",
    )


def _held_by_other(doc: ConversationDoc) -> HappError:
    name = doc.operator.name if doc.operator else "another operator"
    return CONVERSATION_HELD(f"{name} holds this conversation.")


def _not_holding() -> HappError:
    return NOT_HOLDING("Take over the conversation first: only its holder may do this.")


class InboxService:
    def __init__(
        self,
        *,
        repo: InboxRepository,
        conversations: ConversationRepository,
        channels: ChannelService,
        publisher: EventPublisher,
    ) -> None:
        self._repo = repo
        self._conversations = conversations
        self._channels = channels
        self._publisher = publisher

    async def inbox(self, principal: Principal) -> InboxOut:
        channels = None if principal.channels is None else sorted(principal.channels)
        docs = await self._repo.held(channels, INBOX_LIMIT)
        names = await self.channel_names({d.channel_id for d in docs})
        out = InboxOut(waiting=[], mine=[], others=[])
        for d in docs:
            item = InboxConversation.of(d, names.get(d.channel_id))
            if d.state == "waiting":
                out.waiting.append(item)
            elif d.operator is not None and d.operator.id == principal.user_id:
                out.mine.append(item)
            else:
                out.others.append(item)
        return out

    async def channel_names(self, ids: set[str]) -> dict[str, str]:
        names: dict[str, str] = {}
        for channel_id in ids:
            channel = await self._channels.find(channel_id)
            if channel is not None:
                names[channel_id] = channel.name
        return names

    async def take(
        self, principal: Principal, channel_id: str, sender_id: str
    ) -> InboxConversation:
        channel, doc = await self._conversation(channel_id, sender_id, need_operators=True)
        if doc.state == "operator":
            if doc.operator is not None and doc.operator.id == principal.user_id:
                return InboxConversation.of(doc, channel.name)
            if principal.role != "admin":
                raise _held_by_other(doc)
        now = datetime.now(UTC)
        fields: Document = {
            "state": "operator",
            "operator": principal.author.model_dump(),
            "updated_at": now,
        }
        from_assistant = doc.state in ("assistant", "closed")
        if from_assistant:
            fields |= {
                "handoff_at": now,
                "handoff_trigger": "operator",
                "awaiting_operator_since": now,
            }
        new = await self._change(doc, fields, principal, "take", announce=from_assistant)
        if from_assistant:
            HANDOFFS.labels(trigger="operator").inc()
        return InboxConversation.of(new, channel.name)

    async def hand_back(
        self, principal: Principal, channel_id: str, sender_id: str
    ) -> InboxConversation:
        channel, doc = await self._conversation(channel_id, sender_id, need_operators=False)
        if doc.state not in ("operator", "waiting"):
            raise _not_holding()
        if doc.state == "operator":
            self._must_hold(principal, doc)
        now = datetime.now(UTC)
        fields: Document = {
            "state": "assistant",
            "operator": None,
            "updated_at": now,
            "handed_back_at": now,
            "awaiting_operator_since": None,
        }
        new = await self._change(doc, fields, principal, "hand_back")
        return InboxConversation.of(new, channel.name)

    async def close(
        self, principal: Principal, channel_id: str, sender_id: str
    ) -> InboxConversation:
        channel, doc = await self._conversation(channel_id, sender_id, need_operators=False)
        if doc.state == "closed":
            return InboxConversation.of(doc, channel.name)
        if doc.state == "operator":
            self._must_hold(principal, doc)
        now = datetime.now(UTC)
        fields: Document = {
            "state": "closed",
            "operator": None,
            "unread": 0,
            "updated_at": now,
            # What was sent while a person had it stays theirs, as at a hand-back.
            "handed_back_at": now,
            "awaiting_operator_since": None,
        }
        new = await self._change(doc, fields, principal, "close")
        return InboxConversation.of(new, channel.name)

    async def read(self, channel_id: str, sender_id: str) -> None:
        await self._conversation(channel_id, sender_id, need_operators=False)
        await self._repo.mark_read(channel_id, sender_id, datetime.now(UTC))

    async def reply(
        self, principal: Principal, channel_id: str, sender_id: str, body: OperatorReplyIn
    ) -> MessageOut:
        _, doc = await self._conversation(channel_id, sender_id, need_operators=True)
        if doc.state != "operator" or doc.operator is None or doc.operator.id != principal.user_id:
            raise _not_holding()
        if not body.text.strip() and not body.attachments:
            raise invalid_payload("Write a text or attach something.")
        now = datetime.now(UTC)
        command = self._command(principal, doc, "operator_reply", now, text=body.text)
        if body.client_message_id is not None:
            # A retry after a timeout carries the same id: one message, not two.
            command.message_id = (
                "op_"
                + uuid.uuid5(
                    _OPERATOR_NAMESPACE,
                    f"{channel_id}\n{sender_id}\n{principal.user_id}\n{body.client_message_id}",
                ).hex
            )
        command.attachments = [Attachment.model_validate(a.model_dump()) for a in body.attachments]
        await self._send(command)
        message = StoredMessage(
            channel_id=channel_id,
            message_id=command.message_id,
            sender_id=sender_id,
            role="operator",
            text=command.text,
            attachments=command.attachments,
            created_at=now,
            status="pending",
            author=command.operator,
        )
        await self._repo.insert_message(message)
        since = await self._repo.first_reply(channel_id, sender_id)
        if since is not None:
            if since.tzinfo is None:
                since = since.replace(tzinfo=UTC)
            FIRST_REPLY.observe(max(0.0, (now - since).total_seconds()))
        stored = await self._conversations.message(channel_id, command.message_id)
        return MessageOut.of(stored or ShownMessage.model_validate(message.model_dump()))

    # -- the steps ------------------------------------------------------------------

    async def _conversation(
        self, channel_id: str, sender_id: str, *, need_operators: bool
    ) -> tuple[Channel, ConversationDoc]:
        channel = await self._channels.get(channel_id)
        if need_operators and not channel.has_operators:
            raise HANDOFF_DISABLED(
                "This channel's mode is 'assistant': set it to 'assistant_with_handoff' or "
                "'operators' to let people take its conversations.",
            )
        doc = await self._repo.get(channel_id, sender_id)
        if doc is None:
            raise conversation_not_found(sender_id)
        return channel, doc

    @staticmethod
    def _must_hold(principal: Principal, doc: ConversationDoc) -> None:
        mine = doc.operator is not None and doc.operator.id == principal.user_id
        if not mine and principal.role != "admin":
            raise _not_holding() if doc.operator is None else _held_by_other(doc)

    async def _change(
        self,
        doc: ConversationDoc,
        fields: Document,
        principal: Principal,
        kind: CommandType,
        *,
        announce: bool = False,
    ) -> ConversationDoc:
        """The transition, then the event that tells the user; undone if the event
        cannot be queued, so what the UI shows is what the user is told."""
        new = await self._repo.transition(doc, fields)
        if new is None:
            raise CONVERSATION_CHANGED(
                "The conversation changed meanwhile (someone else acted on it); reload it.",
            )
        command = self._command(principal, doc, kind, fields["updated_at"], announce=announce)
        try:
            await self._send(command)
        except HappError:
            # The user would not be told: the change is undone, the caller retries.
            # (A publish that timed out may still arrive: docs/admin.md says so.)
            await self._repo.restore(doc, new, datetime.now(UTC))
            raise
        return new

    @staticmethod
    def _command(
        principal: Principal,
        doc: ConversationDoc,
        kind: CommandType,
        at: datetime,
        *,
        text: str = "",
        announce: bool = False,
    ) -> ConversationCommand:
        prefix = "op_" if kind == "operator_reply" else "evt_"
        return ConversationCommand(
            type=kind,
            channel_id=doc.channel_id,
            sender_id=doc.sender_id,
            message_id=prefix + secrets.token_hex(16),
            operator=principal.author,
            text=text,
            at=at,
            announce=announce,
        )

    async def _send(self, command: ConversationCommand) -> None:
        try:
            await self._publisher.publish(
                INBOUND_MESSAGES,
                command,
                key=conversation_key(command.channel_id, command.sender_id),
            )
        except PublishFailed as exc:
            raise service_unavailable(
                "The broker did not take it right now; retry after Retry-After seconds."
            ) from exc
