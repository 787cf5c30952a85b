"""The assistant against the real broker, database and a fake OpenAI-compatible server.

Each test makes its own channel whose assistant names its own model, and scripts
that model on the shared fake LLM (delays, failures), so tests sharing the
session stay out of each other's way. Messages go in through the webhook or,
to control redelivery and ordering exactly, straight onto ``inbound.messages``;
replies are read off ``outbound.replies`` and out of MongoDB.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer

from happ_admin.conversations.repository import ConversationRepository as AdminConversations
from happ_assistant.history import HistoryCache
from happ_assistant.llm import OFFLINE_LABEL, LlmCallFailed, OfflineResponder, OpenAIChat
from happ_assistant.repository import ConversationRepository
from happ_assistant.service import AssistantService
from happ_assistant.settings import AssistantServiceSettings
from happ_common.channels import ChannelCache, ChannelRepository
from happ_common.events import InboundMessage, OutboundReply
from happ_common.ids import (
    accepted_log_id,
    conversation_id,
    conversation_key,
    new_message_id,
    reply_id_for,
)
from happ_common.kafka import EventPublisher
from happ_common.messages import (
    Handling,
    StoredMessage,
    all_answered,
    user_message_document,
)
from happ_common.settings import InfraSettings
from happ_common.topics import INBOUND_MESSAGES
from happ_devtools.fake_llm import Body, ModelScript
from happ_devtools.reply_tap import ReplyTap as _ReplyTap
from tests.conftest import System, eventually

# -- helpers -----------------------------------------------------------------------


class ReplyTap(_ReplyTap):
    """The shared tap, plus waiting for a channel's replies."""

    async def wait(
        self, channel_id: str, distinct: int, timeout_s: float = 30
    ) -> list[OutboundReply]:
        """The channel's replies once ``distinct`` different ones arrived (repeats included)."""

        async def enough() -> bool:
            return len({r.reply_id for r in self.of(channel_id)}) >= distinct

        await eventually(enough, timeout_s)
        return self.of(channel_id)


@pytest_asyncio.fixture(scope="module")
async def tap(system: System) -> AsyncIterator[ReplyTap]:
    tap = ReplyTap(system.stack.kafka_bootstrap)
    await tap.start()
    try:
        yield tap
    finally:
        await tap.stop()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def channel_with_model(
    system: System, script: ModelScript | None = None, **assistant: Any
) -> tuple[str, str]:
    """A new channel whose assistant uses a model of its own on the fake LLM."""
    model = unique("model")
    system.llm.models[model] = script or ModelScript()
    path = "/" + unique("assistant")
    channel = await system.create_channel(path, assistant={"model": model, **assistant})
    return channel["id"], model


def inbound(channel_id: str, sender: str, text: str, **fields: Any) -> InboundMessage:
    return InboundMessage(
        channel_id=channel_id,
        message_id=fields.pop("message_id", None) or new_message_id(),
        sender_id=sender,
        text=text,
        received_at=datetime.now(UTC),
        **fields,
    )


async def produce(system: System, messages: list[InboundMessage]) -> list[int]:
    """Straight onto inbound.messages, keyed by conversation, in list order; the
    partition of each."""
    producer = AIOKafkaProducer(bootstrap_servers=system.stack.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        sent = [
            await producer.send(
                INBOUND_MESSAGES,
                m.model_dump_json().encode(),
                key=conversation_key(m.channel_id, m.sender_id),
            )
            for m in messages
        ]
        return [metadata.partition for metadata in await asyncio.gather(*sent)]
    finally:
        await producer.stop()


async def send(system: System, channel_id: str, body: dict[str, Any]) -> str:
    resp = await system.send(channel_id, body)
    assert resp.status_code == 200, resp.text
    message_id: str = resp.json()["message_id"]
    return message_id


def turns(request: Body) -> list[tuple[str, Any]]:
    return [(m["role"], m["content"]) for m in request["messages"]]


def last_text(request: Body) -> str:
    content = request["messages"][-1]["content"]
    if isinstance(content, list):
        return " ".join(p["text"] for p in content if p["type"] == "text")
    return str(content)


async def metric(system: System, name: str) -> float:
    """The assistant process's value of one sample (name with its labels), 0 if absent."""
    text = (await system.http.get(system.url("assistant", "/metrics"))).text
    found = re.search(rf"^{re.escape(name)} ([\d.e+-]+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def stored_replies(system: System, channel_id: str) -> list[dict[str, Any]]:
    return await system.db.messages.find({"channel_id": channel_id, "role": "assistant"}).to_list(
        None
    )


# -- context -----------------------------------------------------------------------


async def test_the_llm_gets_the_system_prompt_and_the_channels_history_length(
    system: System, tap: ReplyTap
) -> None:
    channel, model = await channel_with_model(
        system, system_prompt="You are the history bot.", max_history=4, temperature=0.3
    )
    for text in ("one", "two", "three", "four"):
        await send(system, channel, {"sender_id": "hist", "text": text})
    replies = await tap.wait(channel, 4)
    assert [r.text for r in replies] == ["Echo: one", "Echo: two", "Echo: three", "Echo: four"]
    requests = system.llm.requests_for(model)
    assert [last_text(r) for r in requests] == ["one", "two", "three", "four"]
    assert turns(requests[3]) == [
        ("system", "You are the history bot."),
        ("user", "two"),
        ("assistant", "Echo: two"),
        ("user", "three"),
        ("assistant", "Echo: three"),
        ("user", "four"),
    ]
    assert requests[3]["temperature"] == 0.3


async def test_history_is_trimmed_to_the_character_budget_newest_kept(
    system: System, tap: ReplyTap
) -> None:
    # HAPP_ASSISTANT_CONTEXT_CHARS is 24,000: two 9,000-character turns fit, three don't.
    channel, model = await channel_with_model(system)
    for letter in "abc":
        await send(system, channel, {"sender_id": "long", "text": letter * 9_000})
    await send(system, channel, {"sender_id": "long", "text": "short?"})
    await tap.wait(channel, 4)
    request = system.llm.requests_for(model)[-1]
    history = turns(request)[1:-1]
    assert history == [("user", "c" * 9_000), ("assistant", "Echo: " + "c" * 9_000)]
    assert turns(request)[-1] == ("user", "short?")


async def test_a_changed_assistant_setting_applies_to_the_next_message(
    system: System, tap: ReplyTap
) -> None:
    channel, model = await channel_with_model(system, system_prompt="Old prompt.")
    await send(system, channel, {"sender_id": "s", "text": "before"})
    await tap.wait(channel, 1)
    resp = await system.admin.patch(
        f"/api/channels/{channel}",
        json={"assistant": {"system_prompt": "New prompt.", "temperature": 0.1}},
    )
    assert resp.status_code == 200, resp.text
    await asyncio.sleep(1.2)  # HAPP_CHANNEL_CACHE_TTL_S is 1 s
    await send(system, channel, {"sender_id": "s", "text": "after"})
    await tap.wait(channel, 2)
    before, after = system.llm.requests_for(model)
    assert turns(before)[0] == ("system", "Old prompt.")
    assert turns(after)[0] == ("system", "New prompt.")
    assert after["temperature"] == 0.1


async def test_the_same_sender_on_two_channels_has_two_conversations(
    system: System, tap: ReplyTap
) -> None:
    first, first_model = await channel_with_model(system)
    second, second_model = await channel_with_model(system)
    await send(system, first, {"sender_id": "twin", "text": "secret of the first channel"})
    await send(system, second, {"sender_id": "twin", "text": "secret of the second channel"})
    await tap.wait(first, 1)
    await tap.wait(second, 1)
    await send(system, second, {"sender_id": "twin", "text": "what did I say?"})
    await tap.wait(second, 2)
    request = system.llm.requests_for(second_model)[-1]
    said = str(request["messages"])
    assert "secret of the second channel" in said
    assert "secret of the first channel" not in said
    assert len(system.llm.requests_for(first_model)) == 1


# -- attachments -------------------------------------------------------------------


async def test_images_go_as_image_parts_files_and_audio_as_described_links(
    system: System, tap: ReplyTap
) -> None:
    channel, model = await channel_with_model(system)
    attachments = [
        {"type": "image", "url": "https://cdn.example.com/cat.png", "name": "cat.png"},
        {
            "type": "file",
            "url": "https://cdn.example.com/invoice.pdf",
            "name": "invoice.pdf",
            "mime_type": "application/pdf",
        },
        {"type": "audio", "url": "https://cdn.example.com/note.ogg", "mime_type": "audio/ogg"},
    ]
    first = await send(
        system,
        channel,
        {"sender_id": "att", "text": "see these", "attachments": attachments},
    )
    await tap.wait(channel, 1)
    (request,) = system.llm.requests_for(model)
    parts = request["messages"][-1]["content"]
    assert parts[0]["type"] == "text"
    assert parts[0]["text"].splitlines() == [
        "see these",
        "[file attachment “invoice.pdf” (application/pdf): https://cdn.example.com/invoice.pdf]",
        "[audio attachment (audio/ogg): https://cdn.example.com/note.ogg]",
    ]
    assert parts[1:] == [
        {"type": "image_url", "image_url": {"url": "https://cdn.example.com/cat.png"}}
    ]

    doc = await system.db.messages.find_one({"channel_id": channel, "message_id": first})
    assert doc is not None and doc["role"] == "user"
    assert [(a["type"], a["url"], a["name"]) for a in doc["attachments"]] == [
        ("image", "https://cdn.example.com/cat.png", "cat.png"),
        ("file", "https://cdn.example.com/invoice.pdf", "invoice.pdf"),
        ("audio", "https://cdn.example.com/note.ogg", None),
    ]

    # On the next turn the picture is history: described, not sent again.
    await send(system, channel, {"sender_id": "att", "text": "what was the first one?"})
    await tap.wait(channel, 2)
    history_turn = turns(system.llm.requests_for(model)[1])[1]
    assert history_turn[0] == "user"
    assert "[image attachment “cat.png”: https://cdn.example.com/cat.png]" in history_turn[1]


# -- exactly one reply -------------------------------------------------------------


async def test_a_redelivered_message_gets_its_stored_reply_without_asking_the_llm(
    system: System, tap: ReplyTap
) -> None:
    channel, model = await channel_with_model(system)
    metadata = {"source": "app", "nested": {"list": [1, "two", None]}, "n": 1.5}
    msg = inbound(channel, "redelivered", "only once please", metadata=metadata)
    republished_before = await metric(system, "happ_assistant_replies_republished_total")

    await produce(system, [msg, msg])  # Kafka delivers the same message twice

    async def two_published() -> bool:
        return len(tap.of(channel)) >= 2

    await eventually(two_published)
    first, second = tap.of(channel)
    assert first.reply_id == second.reply_id == reply_id_for(channel, msg.message_id)
    assert first.text == second.text == "Echo: only once please"
    assert first.metadata == second.metadata == metadata
    assert first.in_reply_to == msg.message_id
    assert len(system.llm.requests_for(model)) == 1

    (reply,) = await stored_replies(system, channel)
    assert reply["message_id"] == first.reply_id and reply["metadata"] == metadata
    user = await AdminConversations(system.db).message(channel, msg.message_id)
    assert user is not None
    assert (user.status, user.reply_id) == ("replied", first.reply_id)
    assert user.handling == Handling(outcome="answered")
    # Stored on the reply, written once: the message itself is not updated.
    raw = await system.db.messages.find_one({"channel_id": channel, "message_id": msg.message_id})
    assert raw is not None and raw["status"] == "accepted" and raw.get("reply_id") is None
    assert reply["in_reply_to_handling"] == {"outcome": "answered", "trigger": None}
    assert (
        await metric(system, "happ_assistant_replies_republished_total") >= republished_before + 1
    )


async def test_an_old_message_redelivered_after_its_partition_moved_is_not_answered_again(
    system: System, tap: ReplyTap
) -> None:
    # Another instance answered it and moved on; the conversation has grown since,
    # so this instance's history window (max_history + 2 newest) does not hold it:
    # the database must.
    channel, model = await channel_with_model(system, max_history=0)
    old = inbound(channel, "moved", "answered elsewhere")
    reply_id = reply_id_for(channel, old.message_id)
    base = {"channel_id": channel, "sender_id": "moved", "attachments": []}
    docs = [
        {
            **base,
            "message_id": old.message_id,
            "role": "user",
            "text": old.text,
            "created_at": old.received_at,
            "status": "replied",
            "reply_id": reply_id,
        },
        {
            **base,
            "message_id": reply_id,
            "role": "assistant",
            "text": "the stored answer",
            "created_at": datetime.now(UTC),
            "status": "delivered",
            "in_reply_to": old.message_id,
        },
    ]
    for i in range(4):
        docs.append(
            {
                **base,
                "message_id": f"later-{i}",
                "role": "user",
                "text": f"later {i}",
                "created_at": datetime.now(UTC),
                "status": "replied",
            }
        )
    await system.db.messages.insert_many(docs)
    await system.db.conversations.insert_one(
        {"_id": conversation_id(channel, "moved"), "channel_id": channel, "sender_id": "moved"}
    )
    await produce(system, [old])
    (reply,) = await tap.wait(channel, 1)
    assert (reply.reply_id, reply.text) == (reply_id, "the stored answer")
    assert system.llm.requests_for(model) == []
    assert len(await stored_replies(system, channel)) == 1


async def test_messages_the_ingress_stored_ahead_join_the_history_only_in_their_turn(
    system: System, tap: ReplyTap
) -> None:
    # Sent with ids, messages are stored by the ingress as it accepts them. A
    # conversation whose history this instance has not loaded yet (a previous
    # owner answered its first turns) is loaded at its next message, when the
    # messages behind it may be in the database already: they must not show,
    # nor crowd the turns before them out of the history read.
    channel, model = await channel_with_model(system, max_history=2)
    sender = unique("ahead")
    start = datetime.now(UTC)
    for i in range(2):
        earlier = inbound(channel, sender, f"ahead earlier {i}")
        answer = StoredMessage(
            channel_id=channel,
            message_id=reply_id_for(channel, earlier.message_id),
            sender_id=sender,
            role="assistant",
            text=f"Echo: ahead earlier {i}",
            created_at=start + timedelta(milliseconds=10 * i + 5),
            status="pending",
            in_reply_to=earlier.message_id,
            in_reply_to_handling=Handling(outcome="answered"),
        )
        earlier.received_at = start + timedelta(milliseconds=10 * i)
        await system.db.messages.insert_many([user_message_document(earlier), answer.model_dump()])
    await system.db.conversations.insert_one(
        {"_id": conversation_id(channel, sender), "channel_id": channel, "sender_id": sender}
    )
    # More waiting than the history read asks for (max_history 2, plus 2).
    ahead = [inbound(channel, sender, f"ahead message {i}") for i in range(6)]
    for m in ahead:  # as the ingress stores each after the broker's ack
        doc = user_message_document(m)
        log_id = accepted_log_id(channel, m.message_id)
        doc["request"] = {"id": log_id, "created_at": datetime.now(UTC)}
        await system.db.messages.insert_one(doc)
    await produce(system, ahead)
    await tap.wait(channel, len(ahead), timeout_s=30)

    requests = system.llm.requests_for(model)
    assert len(requests) == len(ahead)
    for i, request in enumerate(requests):
        before = f"ahead message {i - 1}" if i else "ahead earlier 1"
        expected = [("user", before), ("assistant", f"Echo: {before}")]
        assert turns(request)[1:] == [*expected, ("user", f"ahead message {i}")]
    # Stored once each, by the "ingress": the assistant found them there.
    users = await system.db.messages.count_documents({"channel_id": channel, "role": "user"})
    assert users == 2 + len(ahead)


async def test_a_message_stored_before_a_crash_is_answered_exactly_once(
    system: System, tap: ReplyTap
) -> None:
    # A previous owner stored the user's message, then died before the reply.
    channel, model = await channel_with_model(system)
    msg = inbound(channel, "half-done", "are you there?")
    await system.db.messages.insert_one(
        {
            "channel_id": channel,
            "message_id": msg.message_id,
            "sender_id": msg.sender_id,
            "role": "user",
            "text": msg.text,
            "attachments": [],
            "created_at": msg.received_at,
            "status": "accepted",
        }
    )
    await produce(system, [msg])
    (reply,) = await tap.wait(channel, 1)
    assert reply.text == "Echo: are you there?"
    assert len(system.llm.requests_for(model)) == 1
    assert len(await stored_replies(system, channel)) == 1
    assert await system.db.messages.count_documents({"channel_id": channel}) == 2


# -- failures ----------------------------------------------------------------------


async def test_a_failing_llm_gets_the_fallback_text_recorded_and_counted(
    system: System, tap: ReplyTap
) -> None:
    script = ModelScript(fail_with=500)
    channel, model = await channel_with_model(
        system, script, fallback_text="We are on it, back soon."
    )
    fallbacks = await metric(system, "happ_assistant_fallback_replies_total")
    errors = await metric(system, 'happ_assistant_llm_errors_total{kind="http_500"}')
    first = await send(system, channel, {"sender_id": "unlucky", "text": "hello?"})
    (reply,) = await tap.wait(channel, 1)
    assert reply.text == "We are on it, back soon."
    assert reply.in_reply_to == first
    assert script.calls == 3  # HAPP_ASSISTANT_LLM_ATTEMPTS

    (stored,) = await stored_replies(system, channel)
    assert stored["text"] == "We are on it, back soon."
    assert stored["llm"]["fallback"] is True
    assert stored["llm"]["error"].startswith("http_500")
    assert stored["llm"]["model"] == model
    assert await metric(system, "happ_assistant_fallback_replies_total") == fallbacks + 1
    assert await metric(system, 'happ_assistant_llm_errors_total{kind="http_500"}') == errors + 3

    # The conversation is not stuck: once the model is back, the next message is answered.
    script.fail_with = None
    await send(system, channel, {"sender_id": "unlucky", "text": "now?"})
    replies = await tap.wait(channel, 2)
    assert replies[-1].text == "Echo: now?"


async def test_a_rate_limited_call_is_retried_and_answered(system: System, tap: ReplyTap) -> None:
    script = ModelScript(fail_first=1, fail_first_with=429)
    channel, _ = await channel_with_model(system, script)
    limited = await metric(system, 'happ_assistant_llm_errors_total{kind="rate_limited"}')
    await send(system, channel, {"sender_id": "busy", "text": "please"})
    (reply,) = await tap.wait(channel, 1)
    assert reply.text == "Echo: please"
    assert script.calls == 2
    (stored,) = await stored_replies(system, channel)
    assert stored["llm"]["fallback"] is False and stored["llm"]["error"] is None
    assert stored["llm"]["provider"] == "openai"
    assert (stored["llm"]["prompt_tokens"], stored["llm"]["completion_tokens"]) == (10, 5)
    assert stored["llm"]["latency_ms"] > 0
    assert (
        await metric(system, 'happ_assistant_llm_errors_total{kind="rate_limited"}') == limited + 1
    )


async def test_the_client_turns_a_slow_or_failing_provider_into_typed_failures(
    system: System,
) -> None:
    slow, broken = unique("slow"), unique("broken")
    system.llm.models[slow] = ModelScript(delay_s=2.0)
    system.llm.models[broken] = ModelScript(fail_with=400)
    chat = OpenAIChat("test-key", system.stack.config.env["OPENAI_BASE_URL"])
    try:
        started = time.monotonic()
        with pytest.raises(LlmCallFailed) as timed_out:
            await chat.complete(
                [{"role": "user", "content": "x"}], model=slow, temperature=0, timeout_s=0.3
            )
        assert time.monotonic() - started < 1.5
        assert (timed_out.value.kind, timed_out.value.retryable) == ("timeout", True)
        with pytest.raises(LlmCallFailed) as refused:
            await chat.complete(
                [{"role": "user", "content": "x"}], model=broken, temperature=0, timeout_s=5
            )
        assert (refused.value.kind, refused.value.retryable) == ("http_400", False)
    finally:
        await chat.close()


async def test_the_offline_responder_labels_the_reply_and_the_stored_message(
    system: System, tap: ReplyTap
) -> None:
    # The session runs with an API key, so this builds the service in-process
    # around the offline responder, on the real database and broker.
    channel, _ = await channel_with_model(system)
    infra = InfraSettings(kafka_bootstrap_servers=system.stack.kafka_bootstrap)
    publisher = EventPublisher(infra, client_id="test-offline")
    await publisher.start()
    repository = ConversationRepository(system.db)
    service = AssistantService(
        settings=AssistantServiceSettings(openai_api_key=None),
        channels=ChannelCache(ChannelRepository(system.db), 1.0),
        conversations=repository,
        history=HistoryCache(100, max_chars=24_000),
        model=OfflineResponder(),
        publisher=publisher,
    )
    try:
        await service.handle(inbound(channel, "nokey", "anyone?"), (INBOUND_MESSAGES, 0))
    finally:
        await repository.drain()
        await publisher.stop()
    (reply,) = await tap.wait(channel, 1)
    assert reply.text.startswith(OFFLINE_LABEL) and "anyone?" in reply.text
    (stored,) = await stored_replies(system, channel)
    assert stored["llm"]["provider"] == "offline"
    assert stored["text"] == reply.text


# -- order and durability ----------------------------------------------------------


async def test_each_conversation_is_answered_in_order_while_many_run_at_once(
    system: System, tap: ReplyTap
) -> None:
    spans: list[tuple[float, float]] = []

    def delay(body: Body) -> float:
        # Later messages often answer faster than earlier ones: order must not care.
        seconds = random.Random(last_text(body)).uniform(0.0, 0.3)
        spans.append((time.monotonic(), time.monotonic() + seconds))
        return seconds

    channel, model = await channel_with_model(system, ModelScript(delay_for=delay))
    conversations, per_conversation = 12, 6
    sent: dict[str, list[InboundMessage]] = defaultdict(list)
    batch = []
    for i in range(per_conversation):
        for c in range(conversations):
            m = inbound(channel, f"order-{c}", f"conversation {c} message {i}")
            sent[m.sender_id].append(m)
            batch.append(m)
    await produce(system, batch)
    replies = await tap.wait(channel, conversations * per_conversation, timeout_s=60)

    answered: dict[str, list[str]] = defaultdict(list)
    for r in replies:
        if r.in_reply_to not in answered[r.to]:
            answered[r.to].append(r.in_reply_to or "")
    for sender, messages in sent.items():
        assert answered[sender] == [m.message_id for m in messages], sender

    # Each call saw exactly the turns before it, in order.
    by_sender: dict[str, list[Body]] = defaultdict(list)
    for request in system.llm.requests_for(model):
        by_sender[last_text(request).split(" message ")[0]].append(request)
    for c in range(conversations):
        requests = by_sender[f"conversation {c}"]
        assert len(requests) == per_conversation
        for i, request in enumerate(requests):
            expected: list[tuple[str, Any]] = []
            for j in range(i):
                text = f"conversation {c} message {j}"
                expected += [("user", text), ("assistant", f"Echo: {text}")]
            assert turns(request)[1:] == [*expected, ("user", f"conversation {c} message {i}")]

    # And the conversations did run at once.
    ends = sorted(end for _, end in spans)
    peak = max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)
    assert peak >= 4, (peak, ends[:3])


async def test_a_restart_mid_stream_loses_nothing_and_answers_nothing_twice(
    system: System, tap: ReplyTap
) -> None:
    script = ModelScript(delay_s=0.25)
    channel, model = await channel_with_model(system, script)
    conversations, per_conversation = 8, 8
    total = conversations * per_conversation
    sent: dict[str, list[InboundMessage]] = defaultdict(list)
    batch = []
    for i in range(per_conversation):
        for c in range(conversations):
            m = inbound(channel, f"restart-{c}", f"restart {c} message {i}")
            sent[m.sender_id].append(m)
            batch.append(m)
    await produce(system, batch)
    await tap.wait(channel, total // 4, timeout_s=30)

    system.stack.services["assistant"].kill()  # SIGKILL: no commit, no goodbye
    killed_at = len({r.reply_id for r in tap.of(channel)})
    assert killed_at < total
    system.stack.start_service("assistant")
    await asyncio.to_thread(system.stack.wait_ready, "assistant")
    # The group rebalances once the dead member's session expires (KAFKA_SESSION_TIMEOUT_MS).
    replies = await tap.wait(channel, total, timeout_s=90)

    texts: dict[str, set[str]] = defaultdict(set)
    for r in replies:
        texts[r.reply_id].add(r.text)
    assert len(texts) == total
    assert all(len(t) == 1 for t in texts.values())  # a repeat is the same reply

    answered: dict[str, list[str]] = defaultdict(list)
    for r in replies:
        if r.in_reply_to not in answered[r.to]:
            answered[r.to].append(r.in_reply_to or "")
    for sender, messages in sent.items():
        assert answered[sender] == [m.message_id for m in messages], sender

    stored = await stored_replies(system, channel)
    assert len(stored) == total
    assert sorted(d["in_reply_to"] for d in stored) == sorted(
        m.message_id for ms in sent.values() for m in ms
    )
    everything = all_answered(
        [
            StoredMessage.model_validate(d)
            for d in await system.db.messages.find({"channel_id": channel}).to_list(None)
        ]
    )
    users = [m for m in everything if m.role == "user"]
    assert len(users) == total and {u.status for u in users} == {"replied"}
    # Only calls cut off by the kill were made twice.
    assert total <= len(system.llm.requests_for(model)) <= total + conversations

    # The new process read the earlier turns back from MongoDB, each reply after
    # its message (all messages were received before any reply was written), so
    # the last call of each conversation carries the whole of it, in order.
    for c in range(conversations):
        final = f"restart {c} message {per_conversation - 1}"
        last = next(r for r in reversed(system.llm.requests_for(model)) if last_text(r) == final)
        expected: list[tuple[str, Any]] = []
        for j in range(per_conversation - 1):
            text = f"restart {c} message {j}"
            expected += [("user", text), ("assistant", f"Echo: {text}")]
        assert turns(last)[1:] == [*expected, ("user", final)]


async def test_lag_and_oldest_unfinished_age_grow_while_a_partition_is_held_and_recover_after(
    system: System,
) -> None:
    """What the stalled-consumer alerts read: a conversation whose LLM takes 1.5 s a
    message holds its partition's committed offset; lag and the oldest record's age
    climb while it does, and both fall back to 0 once it has caught up."""
    channel_id, _ = await channel_with_model(system, ModelScript(delay_s=1.5))
    sender = unique("held")
    messages = [inbound(channel_id, sender, f"held {i}") for i in range(4)]
    partition = (await produce(system, messages))[0]
    labels = f'{{consumer="assistant",partition="{partition}",topic="{INBOUND_MESSAGES}"}}'
    age, lag = (
        f"happ_pipeline_oldest_unfinished_age_seconds{labels}",
        f"happ_pipeline_lag_records{labels}",
    )
    seen_age = seen_lag = 0.0

    async def caught_up() -> bool:
        nonlocal seen_age, seen_lag
        now_age, now_lag = await metric(system, age), await metric(system, lag)
        seen_age, seen_lag = max(seen_age, now_age), max(seen_lag, now_lag)
        replies = await stored_replies(system, channel_id)
        return len(replies) == 4 and now_age == 0 and now_lag == 0

    await eventually(caught_up, 30, interval_s=0.25)
    assert seen_age >= 2.5, seen_age  # the third record waited 3 s behind two others
    assert seen_lag >= 2, seen_lag
