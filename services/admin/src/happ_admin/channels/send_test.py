"""Send test: a real signed request to a channel's outgoing endpoint, made by
the admin itself with the delivery service's own code (``outgoing.render``,
``signed_headers``, ``post_signed``), so a green test means a reply would get
through the same way.
"""

from __future__ import annotations

import contextlib
import uuid
from datetime import UTC, datetime

import aiohttp
from pymongo.errors import PyMongoError

from happ_admin.channels.schemas import SendTestResult
from happ_admin.channels.service import ChannelService
from happ_common.events import OutboundReply
from happ_common.outgoing import send_attempt
from happ_common.request_log import RequestLogWriter

TEST_RECIPIENT = "happ_test"
TEST_TEXT = "This is a test message from HAPP Custom Messenger."


class SendTest:
    def __init__(
        self,
        *,
        channels: ChannelService,
        session: aiohttp.ClientSession,
        request_log: RequestLogWriter,
        timeout_s: float,
        allow_private: bool,
    ) -> None:
        self._channels = channels
        self._session = session
        self._log = request_log
        self._timeout_s = timeout_s
        self._allow_private = allow_private

    async def send(self, channel_id: str) -> SendTestResult:
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
