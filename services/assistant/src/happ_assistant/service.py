"""One incoming message in, exactly one reply out.

The reply id is derived from the incoming message, so a redelivered message
finds its reply already stored and only re-publishes it (the delivery service
skips replies already delivered). When the LLM keeps failing the user gets the
channel's fallback text and the failure is recorded on the reply.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

from prometheus_client import Counter, Gauge, Histogram

from happ_assistant.llm import ChatModel, Completion, LlmCallFailed
from happ_assistant.prompt import build_messages
from happ_assistant.repository import ConversationRepository
from happ_assistant.settings import AssistantServiceSettings
from happ_common.channels import Channel, ChannelCache
from happ_common.events import InboundMessage, OutboundReply
from happ_common.ids import conversation_key, reply_id_for
from happ_common.kafka import EventPublisher
from happ_common.messages import LlmTrace, StoredMessage
from happ_common.topics import OUTBOUND_REPLIES

log = logging.getLogger(__name__)

LLM_LATENCY = Histogram(
    "happ_assistant_llm_latency_seconds",
    "Latency of successful LLM calls",
    ["provider"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60),
)
LLM_TOKENS = Counter("happ_assistant_llm_tokens_total", "Tokens used", ["kind"])
LLM_ERRORS = Counter("happ_assistant_llm_errors_total", "Failed LLM calls by kind", ["kind"])
FALLBACKS = Counter("happ_assistant_fallback_replies_total", "Replies that used the fallback text")
REPLIES = Counter("happ_assistant_replies_total", "Replies produced", ["provider"])
IN_FLIGHT = Gauge("happ_assistant_conversations_in_flight", "Messages being answered now")


class AssistantService:
    def __init__(
        self,
        settings: AssistantServiceSettings,
        channels: ChannelCache,
        conversations: ConversationRepository,
        model: ChatModel,
        publisher: EventPublisher,
    ) -> None:
        self._settings = settings
        self._channels = channels
        self._conversations = conversations
        self._model = model
        self._publisher = publisher

    async def handle(self, msg: InboundMessage) -> None:
        channel = await self._channels.get(msg.channel_id)
        if channel is None:
            log.warning(
                "dropping message %s: channel %s no longer exists", msg.message_id, msg.channel_id
            )
            return
        reply_id = reply_id_for(msg.channel_id, msg.message_id)
        await self._conversations.insert_once(
            StoredMessage(
                channel_id=msg.channel_id,
                message_id=msg.message_id,
                sender_id=msg.sender_id,
                sender_name=msg.sender_name,
                role="user",
                text=msg.text,
                attachments=msg.attachments,
                metadata=msg.metadata,
                created_at=msg.received_at,
                status="accepted",
            )
        )
        reply = await self._conversations.get(msg.channel_id, reply_id)
        if reply is None:
            IN_FLIGHT.inc()
            try:
                reply = await self._answer(channel, msg, reply_id)
            finally:
                IN_FLIGHT.dec()
            await self._conversations.insert_once(reply)
        await self._publisher.publish(
            OUTBOUND_REPLIES,
            OutboundReply(
                channel_id=msg.channel_id,
                reply_id=reply.message_id,
                in_reply_to=msg.message_id,
                to=msg.sender_id,
                text=reply.text,
                metadata=msg.metadata,
                created_at=reply.created_at,
            ),
            key=conversation_key(msg.channel_id, msg.sender_id),
        )
        await self._conversations.mark_replied(msg.channel_id, msg.message_id, reply.message_id)
        await self._conversations.touch_conversation(
            msg.channel_id, msg.sender_id, msg.sender_name, reply.created_at
        )

    async def _answer(self, channel: Channel, msg: InboundMessage, reply_id: str) -> StoredMessage:
        settings = channel.assistant
        history = await self._conversations.history_before(
            msg.channel_id, msg.sender_id, msg.message_id, settings.max_history
        )
        messages = build_messages(
            settings.system_prompt,
            history,
            msg.text,
            msg.attachments,
            max_chars=self._settings.context_chars,
        )
        model = settings.model or self._settings.model
        try:
            completion = await self._complete(messages, model, settings.temperature)
            text = completion.text
            trace = LlmTrace(
                provider=completion.provider,
                model=completion.model,
                latency_ms=completion.latency_ms,
                prompt_tokens=completion.prompt_tokens,
                completion_tokens=completion.completion_tokens,
            )
            REPLIES.labels(provider=completion.provider).inc()
        except LlmCallFailed as exc:
            log.warning(
                "LLM failed for %s/%s, sending fallback: %s", msg.channel_id, msg.message_id, exc
            )
            FALLBACKS.inc()
            text = settings.fallback_text
            trace = LlmTrace(
                provider=self._model.provider,
                model=model,
                error=f"{exc.kind}: {exc}"[:1000],
                fallback=True,
            )
        return StoredMessage(
            channel_id=msg.channel_id,
            message_id=reply_id,
            sender_id=msg.sender_id,
            role="assistant",
            text=text,
            metadata=msg.metadata,
            created_at=datetime.now(UTC),
            status="pending",
            in_reply_to=msg.message_id,
            llm=trace,
        )

    async def _complete(
        self, messages: list[dict[str, object]], model: str, temperature: float
    ) -> Completion:
        s = self._settings
        deadline = time.monotonic() + s.llm_budget_s
        for attempt in range(1, s.llm_attempts + 1):
            remaining = deadline - time.monotonic()
            try:
                completion = await self._model.complete(
                    messages,
                    model=model,
                    temperature=temperature,
                    timeout_s=min(s.llm_timeout_s, max(remaining, 0.1)),
                )
            except LlmCallFailed as exc:
                LLM_ERRORS.labels(kind=exc.kind).inc()
                pause = s.llm_backoff_s * 2 ** (attempt - 1)
                if (
                    not exc.retryable
                    or attempt == s.llm_attempts
                    or time.monotonic() + pause >= deadline
                ):
                    raise
                await asyncio.sleep(pause)
                continue
            LLM_LATENCY.labels(provider=completion.provider).observe(completion.latency_ms / 1000)
            if completion.prompt_tokens:
                LLM_TOKENS.labels(kind="prompt").inc(completion.prompt_tokens)
            if completion.completion_tokens:
                LLM_TOKENS.labels(kind="completion").inc(completion.completion_tokens)
            return completion
        raise AssertionError("unreachable")
