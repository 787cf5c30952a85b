"""One incoming message in, exactly one reply out, in conversation order.

The keyed pipeline runs one message per conversation at a time, many
conversations at once; this is what runs for one message:

1. the channel's assistant settings (in-memory, at most ``HAPP_CHANNEL_CACHE_TTL_S`` old);
2. the conversation's history, from memory (read from MongoDB once per instance
   and partition assignment, see ``history.py``);
3. what is stored of the message read: a reply already stored means a
   redelivery, and it is sent again as it is, without asking the LLM; the
   message itself is usually there, stored by the ingress as its accepted
   record, else it is stored now (happ_common.messages);
4. the LLM, retried with backoff within a time budget, else the channel's
   fallback text with the failure recorded on the reply;
5. the reply stored (an insert on its id, derived from the incoming message's),
   carrying what came of the message (``in_reply_to_handling``, so the message
   needs no update), then published to ``outbound.replies``.

Every write is batched with other messages' writes (``repository.py``) and
awaited before the message counts as done, so its offset is committed only
after its reply is durable and published.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from happ_assistant.filters import Decision, decide
from happ_assistant.history import SLACK, Conversation, HistoryCache, Partition
from happ_assistant.llm import (
    HANDOFF_TOOL,
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
from happ_common.conversation_state import (
    ANSWER_TRIGGERS,
    HANDOFFS,
    PEOPLE_STATES,
    ConversationState,
    HandoffTrigger,
    handed_over_by,
    left_for_people,
)
from happ_common.events import (
    ASSISTANT,
    SYSTEM,
    TYPING,
    ConversationCommand,
    ConversationEvent,
    InboundMessage,
    OutboundReply,
)
from happ_common.ids import ConversationKey, conversation_key, output_ids_for, typing_id_for
from happ_common.kafka import EventPublisher
from happ_common.messages import (
    Handling,
    LlmTrace,
    StoredMessage,
    answered,
    outbound,
    user_message,
    user_message_document,
)
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

FILTERED = Counter(
    "happ_assistant_messages_not_answered_total",
    "User messages the assistant did not answer, by outcome (SPEC §6a filters and handoffs)",
    ["outcome"],
)

TYPING_EVENTS = Counter(
    "happ_assistant_typing_events_total",
    "Typing events published before an answer (channels with typing_events), by outcome",
    ["outcome"],
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
# Outcomes that send the user nothing.
SILENT_OUTCOMES = ("ignored", "rate_limited", "for_operator")


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

    async def handle(
        self, event: InboundMessage | ConversationCommand, partition: Partition
    ) -> None:
        if isinstance(event, ConversationCommand):
            await self._command(event, partition)
            log.info("%s by %s handled", event.type, event.operator.name)
            return
        msg = event
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
            outputs = await self._respond(channel, msg, conversation)
            with _stage("publish"):
                for output in outputs:
                    await self._publish(output, msg.metadata)
            if outputs:
                _observe_reply_delay(msg.received_at)
            log.info(
                "message handled: %s",
                ", ".join(f"{o.event or 'reply'} {o.message_id}" for o in outputs)
                or "nothing to send",
            )
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
        if stored is None:
            conversation = self._history.loaded(None, asked=asked)
        else:
            conversation = self._history.loaded(stored[0], asked=asked, whole=stored[1])
        self._history.put(key, partition, epoch, conversation)
        return conversation

    async def _respond(
        self, channel: Channel, msg: InboundMessage, conversation: Conversation
    ) -> list[StoredMessage]:
        """What goes out for ``msg``, in order: nothing, a reply, a notice, a handoff
        event, or a reply and a handoff event. Stored before it is returned."""
        ids = _output_ids(msg)
        user = user_message(msg)
        known = [m for m in map(conversation.get, ids) if m is not None]
        if known:
            # Handled before (a redelivery; its outputs are in the loaded history):
            # published again, as they were. What came of the message is stored
            # on them (happ_common.messages.answered).
            REPUBLISHED.inc()
            return known
        # What is stored of the message already: the ingress stores a message sent
        # with an id as its accepted record, and a redelivery finds its outputs.
        with _stage("store_message"):
            stored_user, *found = await asyncio.gather(
                self._repo.get(msg.channel_id, msg.message_id),
                *(self._repo.get(msg.channel_id, i) for i in ids),
            )
        outputs = [m for m in found if m is not None]
        decided = stored_user.handling if stored_user is not None else None
        # Only a silent outcome (mark_handled), or a message stored before
        # #14, carries its handling without an output: an outcome that sends
        # something but has nothing stored is decided again.
        if outputs or (decided is not None and decided.outcome in SILENT_OUTCOMES):
            # Handled before: Kafka redelivered it, or its partition moved here.
            REPUBLISHED.inc()
            by_id = {o.message_id: o for o in outputs}
            conversation.add(answered(stored_user, by_id) if stored_user else user)
            for m in outputs:
                conversation.add(m)
            return outputs
        with _stage("store_message"):
            await self._store_incoming(msg, stored_user, conversation)

        state: ConversationState | None = None
        if channel.has_operators:
            with _stage("state"):
                doc = await self._repo.state(msg.channel_id, msg.sender_id)
            state = doc.state if doc is not None else None
            if state not in PEOPLE_STATES and left_for_people(doc, msg.received_at):
                # Sent while a person held the conversation, read after the hand-back.
                state = "operator"
            again = handed_over_by(doc, msg.message_id)
            if again in ANSWER_TRIGGERS:
                # Its answer handed it over before its handling was cut short.
                return await self._answer_or_hand_off(
                    channel, msg, user, conversation, recorded=again
                )
            if again is not None:
                # This message handed it over before its handling was cut short.
                decision = Decision("handoff", again, handoff=again)
                return await self._filtered(
                    channel, msg, user, conversation, decision=decision, handed_over=True
                )
        decision = decide(
            channel,
            sender_id=msg.sender_id,
            text=msg.text,
            at=msg.received_at,
            state=state,
            rate=conversation.rate,
        )
        if decision.assistant_answers:
            return await self._answer_or_hand_off(channel, msg, user, conversation)
        return await self._filtered(channel, msg, user, conversation, decision=decision)

    async def _store_incoming(
        self, msg: InboundMessage, stored: StoredMessage | None, conversation: Conversation
    ) -> None:
        """Stores the message unless it is there already (the ingress stores a
        message sent with an id as it accepts it), and the conversation's
        document with its first message."""
        writes: list[Awaitable[object]] = []
        if stored is None:
            # Should the ingress's record land meanwhile, this insert finds it
            # there: the same message either way.
            writes.append(self._repo.insert_incoming(user_message_document(msg)))
        if not conversation.stored:
            # A conversation without its document is read as empty
            # (repository.recent), so the document comes with its first
            # message. (Should only the message get stored before a crash,
            # its redelivery is still the first message: empty history.)
            writes.append(self._touch(msg, msg.received_at))
        await asyncio.gather(*writes)
        conversation.stored = True

    async def _filtered(
        self,
        channel: Channel,
        msg: InboundMessage,
        user: StoredMessage,
        conversation: Conversation,
        *,
        decision: Decision,
        handed_over: bool = False,
    ) -> list[StoredMessage]:
        """A message the assistant does not answer: ignored, rate limited, answered
        with a notice, or left for (or handed to) the operators (``handed_over``:
        already, by this message, before a crash cut its handling short)."""
        reply_id, event_id = _output_ids(msg)
        handling = Handling(outcome=decision.outcome, trigger=decision.trigger)
        user.handling = handling
        outputs: list[StoredMessage] = []
        if decision.notice is not None:
            outputs.append(_system_message(msg, reply_id, decision.notice))
        if decision.handoff is not None:
            moved = await self._repo.to_operators(
                msg.channel_id, msg.sender_id, decision.handoff, msg.message_id
            )
            if moved:
                if not handed_over:
                    HANDOFFS.labels(trigger=decision.handoff).inc()
                outputs.append(_handoff_event(channel, msg, event_id))
            else:
                # A person has it already (an operator took it meanwhile).
                handling = user.handling = Handling(
                    outcome="for_operator", trigger=decision.trigger
                )
        if decision.outcome in ("for_operator", "handoff"):
            # Counted once however often the message is handled (repository.unread).
            await self._repo.unread(
                msg.channel_id, msg.sender_id, msg.message_id, msg.text, msg.received_at
            )
        if outputs:
            for m in outputs:
                m.in_reply_to_handling = handling
            await asyncio.gather(*(self._repo.insert_reply(m) for m in outputs))
            await self._touch(msg, outputs[-1].created_at)
        else:
            await self._repo.mark_handled(msg.channel_id, msg.message_id, handling)
        FILTERED.labels(outcome=handling.outcome).inc()
        conversation.add(user)
        for m in outputs:
            conversation.add(m)
        return outputs

    async def _answer_or_hand_off(
        self,
        channel: Channel,
        msg: InboundMessage,
        user: StoredMessage,
        conversation: Conversation,
        *,
        recorded: HandoffTrigger | None = None,
    ) -> list[StoredMessage]:
        """The model's answer, committed only while the conversation is the
        assistant's (``recorded``: the handoff its claim already stored)."""
        reply_id, event_id = _output_ids(msg)
        reply = self._unstored.pop(reply_id, None)
        if reply is None and recorded == "fallback":
            reply = _fallback_reply(channel, msg, reply_id, self._model.provider)
        if reply is None:
            history = conversation.history_before(msg.message_id, channel.assistant.max_history)
            if channel.typing_events:
                await self._announce_typing(msg)
            with _stage("llm"):
                reply = await self._answer(channel, msg, reply_id, history)
        self._unstored[reply_id] = reply
        while len(self._unstored) > _UNSTORED_ANSWERS:
            self._unstored.popitem(last=False)
        handoff: HandoffTrigger | None = None
        if channel.has_operators:
            if reply.llm is not None and reply.llm.fallback:
                handoff = "fallback"
            elif reply.llm is not None and reply.llm.tool_handoff:
                handoff = "tool"
            with _stage("claim"):
                claimed, handoff = await self._repo.claim(
                    msg.channel_id, msg.sender_id, msg.message_id, handoff
                )
            if not claimed:
                # An operator took the conversation while the model was answering:
                # the person answers it, the AI reply is dropped.
                self._unstored.pop(reply_id, None)
                decision = Decision("for_operator", "conversation:operator")
                return await self._filtered(channel, msg, user, conversation, decision=decision)
        outputs = [reply] if reply.text or handoff is None else []
        user.handling = Handling(outcome="answered")
        if handoff is not None:
            if recorded is None:
                HANDOFFS.labels(trigger=handoff).inc()
            outputs.append(_handoff_event(channel, msg, event_id))
            user.handling = Handling(outcome="handoff", trigger=handoff)
        for m in outputs:
            m.in_reply_to_handling = user.handling
        with _stage("store_reply"):
            inserted, *_ = await asyncio.gather(
                *(self._repo.insert_reply(m) for m in outputs),
                self._touch(msg, reply.created_at, outputs[-1].text),
            )
        self._unstored.pop(reply_id, None)
        if not inserted and reply.text:
            # Another instance stored its answer first (the partition moved while
            # this one asked the LLM): that one is the reply, here as there.
            outputs[0] = await self._repo.get(msg.channel_id, reply_id) or reply
        conversation.add(user)
        for m in outputs:
            conversation.add(m)
        return outputs

    async def _announce_typing(self, msg: InboundMessage) -> None:
        """The channel's typing event, published before the model is asked: on
        the conversation's partition it then comes before the reply, and the
        delivery service sends it once or drops it, never after the reply.
        Best-effort: a failed publish costs the typing event, not the answer.
        Never stored, so never part of the history the model reads."""
        event = OutboundReply(
            channel_id=msg.channel_id,
            reply_id=typing_id_for(msg.channel_id, msg.message_id),
            in_reply_to=msg.message_id,
            to=msg.sender_id,
            text="",
            metadata=msg.metadata,
            created_at=datetime.now(UTC),
            author=ASSISTANT,
            event=TYPING,
        )
        try:
            await self._publisher.publish(
                OUTBOUND_REPLIES, event, key=conversation_key(msg.channel_id, msg.sender_id)
            )
        except Exception as exc:
            TYPING_EVENTS.labels(outcome="failed").inc()
            log.warning("typing event not published (the answer goes on): %s", exc)
        else:
            TYPING_EVENTS.labels(outcome="published").inc()

    async def _command(self, cmd: ConversationCommand, partition: Partition) -> None:
        """What a person did, in the conversation's order: an operator's reply, or a
        Take over / Hand back / Close, which the user is told of as an event."""
        channel = await self._channels.get(cmd.channel_id)
        if channel is None:
            log.warning("dropping %s for channel %s: it no longer exists", cmd.type, cmd.channel_id)
            return
        key = (cmd.channel_id, cmd.sender_id)
        try:
            conversation = await self._conversation(key, partition, channel.assistant.max_history)
            message = conversation.get(cmd.message_id) or _command_message(channel, cmd)
            if conversation.get(cmd.message_id) is None:
                await self._repo.insert_reply(message)
                await self._repo.touch_conversation(
                    cmd.channel_id,
                    cmd.sender_id,
                    None,
                    message.created_at,
                    message.text or None,
                    for_people=True,
                )
                conversation.add(message)
            await self._publish(message, None)
        except BaseException:
            self._history.forget(key)
            raise

    async def _touch(self, msg: InboundMessage, at: datetime, text: str | None = None) -> None:
        await self._repo.touch_conversation(
            msg.channel_id, msg.sender_id, msg.sender_name, at, text or msg.text
        )

    async def _publish(self, out: StoredMessage, metadata: dict[str, Any] | None) -> None:
        await self._publisher.publish(
            OUTBOUND_REPLIES,
            outbound(out, metadata),
            key=conversation_key(out.channel_id, out.sender_id),
        )

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
        tools = [HANDOFF_TOOL] if channel.mode == "assistant_with_handoff" else None
        started = time.perf_counter()
        try:
            completion = await self._complete(messages, model, settings.temperature, tools)
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
                tool_handoff=completion.handoff,
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
        self,
        messages: list[ChatMessage],
        model: str,
        temperature: float,
        tools: list[dict[str, Any]] | None,
    ) -> Completion:
        completion = await complete_with_retries(
            self._model,
            messages,
            model_name=model,
            temperature=temperature,
            policy=self._retry,
            tools=tools,
            on_error=lambda exc: LLM_ERRORS.labels(kind=exc.kind).inc(),
        )
        LLM_LATENCY.labels(provider=completion.provider).observe(completion.latency_ms / 1000)
        if completion.prompt_tokens:
            LLM_TOKENS.labels(kind="prompt").inc(completion.prompt_tokens)
        if completion.completion_tokens:
            LLM_TOKENS.labels(kind="completion").inc(completion.completion_tokens)
        return completion


def _observe_reply_delay(received: datetime) -> None:
    if received.tzinfo is None:
        received = received.replace(tzinfo=UTC)
    REPLY_DELAY.observe(max(0.0, (datetime.now(UTC) - received).total_seconds()))


def _output_ids(msg: InboundMessage) -> tuple[str, str]:
    return output_ids_for(msg.channel_id, msg.message_id)


def _system_message(msg: InboundMessage, message_id: str, text: str) -> StoredMessage:
    return StoredMessage(
        channel_id=msg.channel_id,
        message_id=message_id,
        sender_id=msg.sender_id,
        role="system",
        text=text,
        created_at=datetime.now(UTC),
        status="pending",
        in_reply_to=msg.message_id,
        author=SYSTEM,
    )


def _fallback_reply(
    channel: Channel, msg: InboundMessage, reply_id: str, provider: str
) -> StoredMessage:
    """The fallback answer a claim recorded, rebuilt for a redelivery without
    asking the model again (its handoff is decided; the text must match it)."""
    return StoredMessage(
        channel_id=msg.channel_id,
        message_id=reply_id,
        sender_id=msg.sender_id,
        role="assistant",
        text=channel.assistant.fallback_text,
        metadata=msg.metadata,
        created_at=datetime.now(UTC),
        status="pending",
        in_reply_to=msg.message_id,
        llm=LlmTrace(provider=provider, error="the model kept failing", fallback=True),
    )


def _handoff_event(channel: Channel, msg: InboundMessage, event_id: str) -> StoredMessage:
    event = _system_message(msg, event_id, channel.handoff_text)
    event.event = "handoff"
    return event


_COMMAND_EVENTS: dict[str, ConversationEvent] = {
    "take": "operator_joined",
    "hand_back": "hand_back",
    "close": "closed",
}


def _command_message(channel: Channel, cmd: ConversationCommand) -> StoredMessage:
    event = _COMMAND_EVENTS.get(cmd.type)
    text = cmd.text
    if cmd.type == "take" and cmd.announce:
        # Taken straight from the assistant: this is the user's handoff.
        event, text = "handoff", channel.handoff_text
    return StoredMessage(
        channel_id=cmd.channel_id,
        message_id=cmd.message_id,
        sender_id=cmd.sender_id,
        role="operator" if event is None else "system",
        text=text,
        attachments=cmd.attachments,
        created_at=cmd.at,
        status="pending",
        author=cmd.operator,
        event=event,
    )
