"""Send test and resend: the two ways an operator makes HAPP call an endpoint.

Send test makes the request itself, with the delivery service's own code
(``outgoing.render``, ``signed_headers``, ``post_signed``), so a green test
means a reply would get through the same way. Resend goes through Kafka to the
delivery service, so the new series gets the usual retries and request log.
"""

from __future__ import annotations

import contextlib
import uuid
from datetime import UTC, datetime

import aiohttp
from pymongo.errors import PyMongoError

from happ_admin.errors import CHANNEL_DISCONNECTED, DELIVERIES_DISABLED, DELIVERY_IN_PROGRESS
from happ_admin.repository import AdminRepository
from happ_admin.schemas import MessageStatusOut, SendTestResult
from happ_admin.service import ChannelService
from happ_admin.service_conversations import ConversationService, message_not_found
from happ_common.channels import Channel
from happ_common.deliveries import DeliveryStatus
from happ_common.errors import service_unavailable
from happ_common.events import OutboundReply
from happ_common.ids import conversation_key
from happ_common.kafka import EventPublisher, PublishFailed
from happ_common.messages import StoredMessage, outbound
from happ_common.outgoing import send_attempt
from happ_common.request_log import RequestLogWriter
from happ_common.topics import OUTBOUND_REPLIES

TEST_RECIPIENT = "happ_test"
TEST_TEXT = "This is a test message from HAPP Custom Messenger."
RESENDABLE: tuple[DeliveryStatus, ...] = ("delivered", "failed", "canceled")


def require_sendable(channel: Channel) -> None:
    """409 unless the delivery service would send this channel's replies now."""
    if channel.status != "connected":
        raise CHANNEL_DISCONNECTED(
            "The channel is disconnected, so the reply would not be sent; connect it first."
        )
    if channel.deliveries_disabled is not None:
        raise DELIVERIES_DISABLED(
            "The channel's deliveries were turned off because its endpoint kept failing; "
            "fix the endpoint (Send test), then connect the channel again."
        )


class DeliveryActions:
    def __init__(
        self,
        *,
        repo: AdminRepository,
        channels: ChannelService,
        conversations: ConversationService,
        publisher: EventPublisher,
        session: aiohttp.ClientSession,
        request_log: RequestLogWriter,
        timeout_s: float,
        allow_private: bool,
    ) -> None:
        self._repo = repo
        self._channels = channels
        self._conversations = conversations
        self._publisher = publisher
        self._session = session
        self._log = request_log
        self._timeout_s = timeout_s
        self._allow_private = allow_private

    async def send_test(self, channel_id: str) -> SendTestResult:
        # Allowed on a disconnected channel too: "confirm the endpoint, test,
        # then connect" is the product page's reconnect procedure.
        channel = await self._channels.get(channel_id)
        test_id = "tst_" + uuid.uuid4().hex
        reply = OutboundReply(
            channel_id=channel.id,
            reply_id=test_id,
            in_reply_to=None,
            to=TEST_RECIPIENT,
            text=TEST_TEXT,
            metadata=None,
            created_at=datetime.now(UTC),
            test=True,
        )
        sent = await send_attempt(
            self._session,
            channel,
            reply,
            1,
            timeout_s=self._timeout_s,
            allow_private=self._allow_private,
        )
        outcome, log_id = sent.outcome, sent.log_entry.id
        self._log.add(sent.log_entry)
        # The operator looks at the log right after a test: write it now rather
        # than at the next batch. A failure leaves it buffered for the writer.
        with contextlib.suppress(PyMongoError):
            await self._log.flush()
        return SendTestResult(
            ok=outcome.ok,
            status_code=outcome.status_code,
            response_time_ms=outcome.duration_ms,
            error_code=outcome.error_code,
            error_message=outcome.error_message,
            message_id=test_id,
            log_id=log_id,
        )

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
