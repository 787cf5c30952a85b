"""Resend: a reply delivered, failed or canceled is delivered again, as a new
series (one reply, or every failed one of a bulk recovery).

It goes through Kafka to the delivery service, so the new series gets the usual
retries and request log. (Send test, the other way an operator makes HAPP call
an endpoint, is the channel's: ``happ_admin.channels.send_test``.)
"""

from __future__ import annotations

from datetime import UTC, datetime

from happ_admin.channels.service import ChannelService
from happ_admin.conversations.repository import ConversationRepository
from happ_admin.conversations.schemas import MessageStatusOut
from happ_admin.conversations.service import ConversationService, message_not_found
from happ_admin.errors import (
    CHANNEL_DISCONNECTED,
    DELIVERIES_DISABLED,
    DELIVERY_IN_PROGRESS,
    REPLIES_NOT_POSTED,
)
from happ_common.channels import Channel
from happ_common.deliveries import DeliveryStatus
from happ_common.errors import service_unavailable
from happ_common.ids import conversation_key
from happ_common.kafka import EventPublisher, PublishFailed
from happ_common.messages import StoredMessage, outbound
from happ_common.topics import OUTBOUND_REPLIES

RESENDABLE: tuple[DeliveryStatus, ...] = ("delivered", "failed", "canceled")


def require_sendable(channel: Channel) -> None:
    """409 unless the delivery service would send this channel's replies now."""
    if channel.status != "connected":
        raise CHANNEL_DISCONNECTED(
            "The channel is disconnected, so the reply would not be sent; connect it first."
        )
    if not channel.posts_replies:
        # The delivery service would skip the reply and leave it claimed.
        raise REPLIES_NOT_POSTED(
            "The channel answers in the webhook's response only (delivery: response), so "
            "nothing would be sent; set its delivery to 'endpoint' or 'both' first."
        )
    if channel.deliveries_disabled is not None:
        raise DELIVERIES_DISABLED(
            "The channel's deliveries were turned off because its endpoint kept failing; "
            "fix the endpoint (Send test), then connect the channel again."
        )


class ReplyResender:
    def __init__(
        self,
        *,
        repo: ConversationRepository,
        channels: ChannelService,
        conversations: ConversationService,
        publisher: EventPublisher,
    ) -> None:
        self._repo = repo
        self._channels = channels
        self._conversations = conversations
        self._publisher = publisher

    async def resend(self, channel_id: str, message_id: str) -> MessageStatusOut:
        channel = await self._channels.get(channel_id)
        reply = await self._repo.message(channel_id, message_id)
        if reply is not None and reply.role == "user":
            # The id of the message being answered is as good as its reply's.
            reply = await self._repo.message(channel_id, reply.reply_id) if reply.reply_id else None
        if reply is None:
            raise message_not_found(message_id)
        require_sendable(channel)
        # Right after a connect the delivery service's cached copy may still say
        # "disconnected"; it re-reads the channel before canceling anything.
        if not await self.requeue(reply, RESENDABLE):
            raise DELIVERY_IN_PROGRESS(
                "This reply is still being delivered; resend it once it is delivered, failed "
                "or canceled.",
            )
        return await self._conversations.status(channel_id, reply.message_id)

    async def requeue(self, reply: StoredMessage, from_states: tuple[DeliveryStatus, ...]) -> bool:
        """Queue a finished reply for a new series of attempts (a resend, or one
        reply of a bulk recovery); False if its delivery was not in one of
        ``from_states`` (still running, or another resend or recovery won).

        Claiming the reply (finished → pending) first makes a double click, two
        operators, or a recovery started twice, start one new series rather
        than two. Published on the conversation's key, so replies requeued one
        after the other reach the delivery service in that order."""
        now = datetime.now(UTC)
        previous = await self._repo.claim_for_resend(
            reply.channel_id, reply.message_id, from_states, now
        )
        if previous is None:
            return False
        event = outbound(reply, reply.metadata, resend=True)
        try:
            await self._publisher.publish(
                OUTBOUND_REPLIES, event, key=conversation_key(reply.channel_id, reply.sender_id)
            )
        except PublishFailed as exc:
            await self._repo.restore_delivery(reply.channel_id, reply.message_id, previous, now)
            raise service_unavailable(
                "The resend could not be queued right now; retry after Retry-After seconds."
            ) from exc
        return True
