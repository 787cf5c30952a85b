"""One incoming message in, exactly one reply out, in conversation order.

The keyed pipeline runs one message per conversation at a time, many
conversations at once; this is what runs for one message:

1. the channel's assistant settings (in-memory, at most ``HAPP_CHANNEL_CACHE_TTL_S`` old);
2. the conversation's history, from memory (read from MongoDB once per instance
   and partition assignment, see ``history.py``);
3. the user's message stored (``$setOnInsert``): if it was stored already, this
   is a redelivery, and a reply already stored is sent again as it is, without
   asking the LLM;
4. the LLM, retried with backoff within a time budget, else the channel's
   fallback text with the failure recorded on the reply;
5. the reply stored (``$setOnInsert`` on its id, derived from the incoming
   message's), then published to ``outbound.replies``.

Every write is batched with other messages' writes (``repository.py``) and
awaited before the message counts as done, so its offset is committed only
after its reply is durable and published.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from prometheus_client import Counter, Gauge, Histogram

from happ_assistant.history import SLACK, Conversation, ConversationKey, HistoryCache, Partition
from happ_assistant.llm import (
    ChatMessage,
    ChatModel,
    Completion,
    LlmCallFailed,
    RetryPolicy,
    complete_with_retries,
)
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
REPLIES = Counter("happ_assistant_replies_total", "Replies produced by the LLM", ["provider"])
IN_FLIGHT = Gauge(
    "happ_assistant_conversations_in_flight", "Conversations with a message being handled now"
)
REPUBLISHED = Counter(
    "happ_assistant_replies_republished_total",
    "Redelivered messages answered with their stored reply, without the LLM",
)
HISTORY_LOADS = Counter(
    "happ_assistant_history_loads_total", "Conversation histories read from MongoDB"
)
REPLY_DELAY = Histogram(
    "happ_assistant_reply_delay_seconds",
    "From the webhook accepting a message to its reply on outbound.replies",
    buckets=(0.1, 0.25, 0.5, 1, 1.5, 2, 3, 5, 10, 20, 30, 60, 120, 300),
)

STAGE_TIME = Histogram(
    "happ_assistant_stage_seconds",
    "Time one message spends in each stage of its handling",
    ["stage"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120),
)


@contextmanager
def _stage(name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        STAGE_TIME.labels(stage=name).observe(time.perf_counter() - started)


# Answers whose storing failed, kept for the handler's retry so that one message
# costs one LLM call even when the database hiccups.
_UNSTORED_ANSWERS = 4096


class AssistantService:
    def __init__(
        self,
        *,
        settings: AssistantServiceSettings,
        channels: ChannelCache,
        conversations: ConversationRepository,
        history: HistoryCache,
        model: ChatModel,
        publisher: EventPublisher,
    ) -> None:
        self._settings = settings
        self._channels = channels
        self._repo = conversations
        self._history = history
        self._model = model
        self._publisher = publisher
        self._unstored: OrderedDict[str, StoredMessage] = OrderedDict()
        self._retry = RetryPolicy(
            attempts=settings.llm_attempts,
            budget_s=settings.llm_budget_s,
            timeout_s=settings.llm_timeout_s,
            backoff_s=settings.llm_backoff_s,
        )

    async def handle(self, msg: InboundMessage, partition: Partition) -> None:
        with _stage("channel"):
            channel = await self._channels.get(msg.channel_id)
        if channel is None:
            log.warning(
                "dropping message %s: channel %s no longer exists", msg.message_id, msg.channel_id
            )
            return
        key = (msg.channel_id, msg.sender_id)
        IN_FLIGHT.inc()
        try:
            conversation = await self._conversation(key, partition, channel.assistant.max_history)
            reply = await self._reply(channel, msg, conversation)
            with _stage("publish"):
                await self._publish(msg, reply)
        except BaseException:
            # Whatever this attempt left half done, the next one reads back from MongoDB.
            self._history.forget(key)
            raise
        finally:
            IN_FLIGHT.dec()

    async def _conversation(
        self, key: ConversationKey, partition: Partition, max_history: int
    ) -> Conversation:
        cached = self._history.get(key, max_history)
        if cached is not None:
            return cached
        epoch = self._history.epoch(partition)
        asked = max_history + SLACK
        with _stage("history"):
            stored = await self._repo.recent(key[0], key[1], asked)
        HISTORY_LOADS.inc()
        conversation = self._history.loaded(stored, asked=asked)
        self._history.put(key, partition, epoch, conversation)
        return conversation

    async def _reply(
        self, channel: Channel, msg: InboundMessage, conversation: Conversation
    ) -> StoredMessage:
        reply_id = reply_id_for(msg.channel_id, msg.message_id)
        user = _user_message(msg)
        stored = conversation.get(reply_id)
        if stored is None:
            with _stage("store_message"):
                if conversation.stored:
                    first_time = await self._repo.insert_incoming(user)
                else:
                    # A conversation without its document is read as empty
                    # (repository.recent), so the document comes with its first
                    # message. (Should only the message get stored before a crash,
                    # its redelivery is still the first message: empty history.)
                    first_time, _ = await asyncio.gather(
                        self._repo.insert_incoming(user), self._touch(msg, msg.received_at)
                    )
                    conversation.stored = True
            if not first_time:
                # Seen before: Kafka redelivered it, or its partition moved here.
                stored = await self._repo.get(msg.channel_id, reply_id)
        if stored is not None:
            REPUBLISHED.inc()
            await self._repo.mark_replied(msg.channel_id, msg.message_id, reply_id)
            conversation.add(user)
            conversation.add(stored)
            return stored

        reply = self._unstored.pop(reply_id, None)
        if reply is None:
            history = conversation.history_before(msg.message_id, channel.assistant.max_history)
            with _stage("llm"):
                reply = await self._answer(channel, msg, reply_id, history)
        self._unstored[reply_id] = reply
        while len(self._unstored) > _UNSTORED_ANSWERS:
            self._unstored.popitem(last=False)
        with _stage("store_reply"):
            inserted, _, _ = await asyncio.gather(
                self._repo.insert_reply(reply),
                self._repo.mark_replied(msg.channel_id, msg.message_id, reply_id),
                self._touch(msg, reply.created_at),
            )
        self._unstored.pop(reply_id, None)
        if not inserted:
            # Another instance stored its answer first (the partition moved while
            # this one asked the LLM): that one is the reply, here as there.
            reply = await self._repo.get(msg.channel_id, reply_id) or reply
        conversation.add(user)
        conversation.add(reply)
        return reply

    async def _touch(self, msg: InboundMessage, at: datetime) -> None:
        await self._repo.touch_conversation(msg.channel_id, msg.sender_id, msg.sender_name, at)

    async def _publish(self, msg: InboundMessage, reply: StoredMessage) -> None:
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
        received = msg.received_at
        if received.tzinfo is None:
            received = received.replace(tzinfo=UTC)
        REPLY_DELAY.observe(max(0.0, (datetime.now(UTC) - received).total_seconds()))

    async def _answer(
        self,
        channel: Channel,
        msg: InboundMessage,
        reply_id: str,
        history: list[StoredMessage],
    ) -> StoredMessage:
        settings = channel.assistant
        messages = build_messages(
            settings.system_prompt,
            history,
            msg.text,
            msg.attachments,
            max_chars=self._settings.context_chars,
        )
        model = settings.model or self._settings.model
        started = time.perf_counter()
        try:
            completion = await self._complete(messages, model, settings.temperature)
        except LlmCallFailed as exc:
            log.warning(
                "LLM failed for %s/%s, sending the fallback text: %s: %s",
                msg.channel_id,
                msg.message_id,
                exc.kind,
                exc,
            )
            FALLBACKS.inc()
            text = settings.fallback_text
            trace = LlmTrace(
                provider=self._model.provider,
                model=model,
                latency_ms=round((time.perf_counter() - started) * 1000, 2),
                error=f"{exc.kind}: {exc}"[:1000],
                fallback=True,
            )
        else:
            REPLIES.labels(provider=completion.provider).inc()
            text = completion.text
            trace = LlmTrace(
                provider=completion.provider,
                model=completion.model,
                latency_ms=completion.latency_ms,
                prompt_tokens=completion.prompt_tokens,
                completion_tokens=completion.completion_tokens,
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
        self, messages: list[ChatMessage], model: str, temperature: float
    ) -> Completion:
        completion = await complete_with_retries(
            self._model,
            messages,
            model_name=model,
            temperature=temperature,
            policy=self._retry,
            on_error=lambda exc: LLM_ERRORS.labels(kind=exc.kind).inc(),
        )
        LLM_LATENCY.labels(provider=completion.provider).observe(completion.latency_ms / 1000)
        if completion.prompt_tokens:
            LLM_TOKENS.labels(kind="prompt").inc(completion.prompt_tokens)
        if completion.completion_tokens:
            LLM_TOKENS.labels(kind="completion").inc(completion.completion_tokens)
        return completion


def _user_message(msg: InboundMessage) -> StoredMessage:
    return StoredMessage(
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
