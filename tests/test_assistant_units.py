"""The assistant's pure parts, without broker or database: the prompt, the in-memory
history and its bounds, the order a reloaded conversation is shown in, the LLM
retry policy (against a fake chat model) and the offline responder's label."""

from __future__ import annotations

import gc
import itertools
import json
import tracemalloc
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from prometheus_client import REGISTRY
from pydantic import BaseModel

from happ_assistant.history import (
    MAX_HISTORY,
    SLACK,
    Conversation,
    HistoryCache,
    conversation_order,
    message_bytes,
)
from happ_assistant.llm import (
    OFFLINE_LABEL,
    OFFLINE_PROVIDER,
    ChatMessage,
    Completion,
    LlmCallFailed,
    OfflineResponder,
    RetryPolicy,
    complete_with_retries,
)
from happ_assistant.prompt import build_messages, history_chars
from happ_assistant.repository import ConversationRepository
from happ_assistant.service import AssistantService
from happ_assistant.settings import AssistantServiceSettings
from happ_common.channels import Channel, ChannelCache
from happ_common.events import Attachment, InboundMessage
from happ_common.ids import reply_id_for
from happ_common.kafka import EventPublisher
from happ_common.messages import Handling, Role, StoredMessage, answered

T0 = datetime(2026, 1, 1, tzinfo=UTC)
_seq = itertools.count()


def msg(
    role: Role, text: str, *, at: int | None = None, in_reply_to: str | None = None, **kw: Any
) -> StoredMessage:
    n = next(_seq)
    if role == "user":
        # As a history load reads it: answered (a message not handled yet is not
        # part of its conversation's history: happ_common.messages.handled).
        kw.setdefault("handling", Handling(outcome="answered"))
    return StoredMessage(
        channel_id="cm_test",
        message_id=kw.pop("message_id", f"{role[0]}{n}"),
        sender_id="u",
        role=role,
        text=text,
        created_at=T0 + timedelta(seconds=at if at is not None else n),
        status="accepted" if role == "user" else "pending",
        in_reply_to=in_reply_to,
        **kw,
    )


# -- prompt ------------------------------------------------------------------------


def test_system_prompt_history_in_order_and_current_message_last() -> None:
    history = [msg("user", "hi"), msg("assistant", "hello"), msg("user", "and?")]
    out = build_messages("Be brief.", history, "now", [], max_chars=10_000)
    assert out == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "and?"},
        {"role": "user", "content": "now"},
    ]


def test_history_is_trimmed_to_the_character_budget_newest_kept() -> None:
    history = [msg("user", f"{i}" * 400) for i in range(10)]
    out = build_messages("S", history, "q", [], max_chars=1_300)
    contents = [m["content"] for m in out[1:-1]]
    # 1300 - len("S") - len("q") = 1298 characters: three 400-character messages fit.
    assert contents == ["7" * 400, "8" * 400, "9" * 400]


def test_images_are_image_parts_files_and_audio_described_links() -> None:
    attachments = [
        Attachment(type="image", url="https://x.test/cat.png", name="cat.png"),
        Attachment(
            type="file", url="https://x.test/a.pdf", name="a.pdf", mime_type="application/pdf"
        ),
        Attachment(type="audio", url="https://x.test/v.ogg"),
    ]
    (current,) = build_messages("S", [], "look", attachments, max_chars=10_000)[1:]
    parts = current["content"]
    assert parts[0]["type"] == "text"
    assert parts[0]["text"].splitlines() == [
        "look",
        "[file attachment “a.pdf” (application/pdf): https://x.test/a.pdf]",
        "[audio attachment: https://x.test/v.ogg]",
    ]
    assert parts[1:] == [{"type": "image_url", "image_url": {"url": "https://x.test/cat.png"}}]


def test_past_images_are_described_not_resent() -> None:
    past = msg("user", "", attachments=[Attachment(type="image", url="https://x.test/p.png")])
    out = build_messages("S", [past], "what was it?", [], max_chars=10_000)
    assert out[1] == {"role": "user", "content": "[image attachment: https://x.test/p.png]"}


# -- the order a stored conversation is shown in -----------------------------------


def test_a_reloaded_conversation_puts_each_reply_after_its_message() -> None:
    # The user wrote twice before the first reply was ready: by time, u1 u2 r1 r2.
    u1 = msg("user", "one", at=0)
    u2 = msg("user", "two", at=1)
    r1 = msg("assistant", "re one", at=2, in_reply_to=u1.message_id)
    r2 = msg("assistant", "re two", at=3, in_reply_to=u2.message_id)
    assert conversation_order([u1, u2, r1, r2]) == [u1, r1, u2, r2]


def test_a_reply_whose_message_fell_out_of_the_window_keeps_its_place() -> None:
    r0 = msg("assistant", "re older", at=0, in_reply_to="gone")
    u1 = msg("user", "one", at=1)
    r1 = msg("assistant", "re one", at=2, in_reply_to=u1.message_id)
    assert conversation_order([r0, u1, r1]) == [r0, u1, r1]


# -- the in-memory history ---------------------------------------------------------


def test_history_before_a_message_excludes_it_and_what_follows() -> None:
    cache = HistoryCache(10, max_chars=10_000)
    a, b, c = msg("user", "a"), msg("assistant", "b"), msg("user", "c")
    conv = cache.loaded([a, b, c], asked=22)
    assert conv.history_before(c.message_id, 20) == [a, b]
    assert conv.history_before("not-here", 20) == [a, b, c]
    assert conv.history_before("not-here", 2) == [b, c]
    assert conv.history_before("not-here", 0) == []


def test_a_conversation_keeps_only_its_character_budget_and_says_so() -> None:
    cache = HistoryCache(10, max_chars=1_000)
    conv = cache.loaded([], asked=22)
    for i in range(5):
        conv.add(msg("user", str(i) * 300))
    assert [m.text[0] for m in conv.history_before("x", 20)] == ["2", "3", "4"]
    assert sum(history_chars(m) for m in conv.history_before("x", 20)) <= 1_000
    # Older messages could never be sent again: nothing is missing for any max_history.
    assert conv.trimmed and conv.covers(200)


def test_a_conversation_never_holds_more_than_the_largest_history() -> None:
    cache = HistoryCache(10, max_chars=1_000_000)
    conv = cache.loaded(None, asked=22)
    for i in range(MAX_HISTORY + 50):
        conv.add(msg("user", f"m{i}"))
    assert len(conv) == MAX_HISTORY + SLACK
    assert conv.covers(MAX_HISTORY)
    assert conv.history_before("x", MAX_HISTORY)[-1].text == f"m{MAX_HISTORY + 49}"


def test_a_load_leaves_out_messages_stored_ahead_and_not_handled_yet() -> None:
    cache = HistoryCache(10, max_chars=1_000_000)
    a = msg("user", "a")
    r = msg("assistant", "r", in_reply_to=a.message_id)
    # Stored by the ingress as it accepted them, waiting behind the one being handled.
    ahead = [msg("user", f"next {i}", handling=None) for i in range(2)]
    conv = cache.loaded([a, r, *ahead], asked=22)
    assert conv.history_before(ahead[0].message_id, 20) == [a, r]
    assert all(conv.get(m.message_id) is None for m in ahead)
    assert conv.covers(200)  # fewer handled than asked: that is all of it
    # As many handled as asked were read (past the waiting ones): there may be more.
    partial = cache.loaded([a, r, *ahead], asked=2)
    assert partial.depth == 2 and not partial.covers(1)


def test_a_partial_load_covers_only_what_it_read() -> None:
    cache = HistoryCache(10, max_chars=100_000)
    loaded = [msg("user", str(i)) for i in range(12)]
    full = cache.loaded(loaded, asked=12)  # as many as asked: there may be more
    assert full.covers(10) and not full.covers(11)
    full.add(msg("user", "new"))  # one more known message
    assert full.covers(11)
    short = cache.loaded(loaded[:5], asked=12)  # fewer than asked: that is all of it
    assert short.covers(200)
    assert cache.loaded(None, asked=12).covers(200) and not cache.loaded(None, asked=12).stored


def test_the_cache_drops_least_recently_used_conversations_beyond_its_bound() -> None:
    cache = HistoryCache(2, max_chars=1_000)
    p = ("inbound.messages", 0)
    for key in (("c", "a"), ("c", "b")):
        cache.put(key, p, cache.epoch(p), cache.loaded(None, asked=22))
    assert cache.get(("c", "a"), 20) is not None  # a is now the most recent
    cache.put(("c", "c"), p, cache.epoch(p), cache.loaded(None, asked=22))
    assert cache.get(("c", "b"), 20) is None
    assert cache.get(("c", "a"), 20) is not None
    assert len(cache) == 2


def test_revoking_a_partition_drops_its_conversations_and_discards_loads_in_progress() -> None:
    cache = HistoryCache(100, max_chars=1_000)
    p0, p1 = ("inbound.messages", 0), ("inbound.messages", 1)
    cache.put(("c", "a"), p0, cache.epoch(p0), cache.loaded(None, asked=22))
    cache.put(("c", "b"), p1, cache.epoch(p1), cache.loaded(None, asked=22))
    started = cache.epoch(p0)  # a load for p0 begins...
    cache.revoke({p0})  # ...the partition moves to another instance...
    cache.put(("c", "z"), p0, started, cache.loaded(None, asked=22))  # ...the load ends
    assert cache.get(("c", "a"), 20) is None
    assert cache.get(("c", "z"), 20) is None
    assert cache.get(("c", "b"), 20) is not None


def test_a_cached_conversation_holds_only_its_channels_history_and_the_slack() -> None:
    cache = HistoryCache(10, max_chars=1_000_000)
    p = ("inbound.messages", 0)
    conv = cache.loaded(None, asked=10 + SLACK)  # a channel with max_history 10
    cache.put(("c", "u"), p, cache.epoch(p), conv)
    added = [msg("user", f"m{i}") for i in range(50)]
    for m in added:
        conv.add(m)
    assert len(conv) == 10 + SLACK
    assert cache.get(("c", "u"), 10) is conv
    assert conv.history_before("x", 10) == added[-10:]
    assert conv.history_before(added[-1].message_id, 10) == added[-11:-1]
    # The channel now wants more history than is held: it is read again.
    assert cache.get(("c", "u"), 11) is None


def test_a_cached_conversation_gives_the_prompt_what_a_fresh_load_would() -> None:
    # Whatever the channel's max_history (changed on the way, too) and character
    # budget, the history the prompt gets from memory equals the history read back
    # from the database, as the service reads it when the cache cannot serve it.
    schedules = {
        "1": [1] * 40,
        "3": [3] * 40,
        "10": [10] * 40,
        "10, few characters": [10] * 40,
        "changing": [10] * 10 + [3] * 10 + [20] * 10 + [5] * 10,
    }
    for name, max_histories in schedules.items():
        cache = HistoryCache(10, max_chars=3_000 if "few" in name else 100_000)
        p, key = ("inbound.messages", 0), ("c", "u")
        stored: list[StoredMessage] = []

        def from_database(asked: int) -> Conversation:
            return cache.loaded(stored[-asked:] if stored else None, asked=asked)

        for i, max_history in enumerate(max_histories):
            asked = max_history + SLACK
            conv = cache.get(key, max_history)
            if conv is None:
                conv = from_database(asked)
                cache.put(key, p, cache.epoch(p), conv)
            user = msg("user", f"q{i}" * (1 + (i * 37) % 300))
            assert conv.history_before(user.message_id, max_history) == from_database(
                asked
            ).history_before(user.message_id, max_history), (name, i)
            assert len(conv) <= asked
            reply = msg("assistant", f"a{i}" * (1 + (i * 53) % 200), in_reply_to=user.message_id)
            conv.add(user)
            conv.add(reply)
            stored += [user, reply]


def test_the_byte_estimate_follows_what_messages_take_in_memory() -> None:
    shapes: dict[str, dict[str, Any]] = {
        "short text": {"text": "hello"},
        "long text": {"text": "x" * 8_000},
        "non-ASCII text": {"text": "привет мир " * 400},
        "many small metadata values": {
            "text": "hi",
            "metadata": {f"k{i}": {"v": "x" * 30, "n": i} for i in range(80)},
        },
        "one long metadata value": {"text": "hi", "metadata": {"k": "v" * 10_000}},
        "attachments": {
            "text": "see",
            "attachments": [{"type": "file", "url": "https://x.test/" + "f" * 200}] * 10,
        },
        "reply with its LLM trace": {
            "text": "answer " * 50,
            "role": "assistant",
            "llm": {"provider": "openai", "model": "gpt-4o-mini", "prompt_tokens": 5},
        },
    }
    for name, fields in shapes.items():
        doc = msg("user", "").model_dump(mode="json") | fields
        # Each message its own objects, as read from the database.
        raw = [
            json.dumps(doc | {"message_id": f"m{i}", "text": f"{doc['text']}{i}"})
            for i in range(200)
        ]
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        messages = [StoredMessage.model_validate_json(r) for r in raw]
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        taken = sum(d.size_diff for d in after.compare_to(before, "filename")) / len(messages)
        estimate = message_bytes(messages[0])
        assert 0.8 * taken <= estimate <= 2 * taken, (name, taken, estimate)


def test_the_cache_is_bounded_in_bytes_least_recently_used_dropped_first() -> None:
    p = ("inbound.messages", 0)
    heavy = {"k": "v" * 10_000}  # metadata counts, not only text
    one = message_bytes(msg("user", "x", metadata=heavy))
    cache = HistoryCache(1_000, max_chars=100_000, max_bytes=int(2.5 * one) + 4_000)
    for sender in ("a", "b"):
        cache.put(
            ("c", sender),
            p,
            cache.epoch(p),
            cache.loaded([msg("user", "x", metadata=heavy)], asked=22),
        )
    assert cache.get(("c", "a"), 20) is not None  # a is now the most recent
    cache.put(
        ("c", "c"), p, cache.epoch(p), cache.loaded([msg("user", "x", metadata=heavy)], asked=22)
    )
    assert cache.get(("c", "b"), 20) is None
    assert cache.get(("c", "a"), 20) is not None and cache.get(("c", "c"), 20) is not None
    assert one * 2 <= cache.bytes <= int(2.5 * one) + 4_000
    assert REGISTRY.get_sample_value("happ_assistant_history_cache_bytes") == cache.bytes


def test_a_conversation_growing_in_the_cache_counts_against_the_bound() -> None:
    p = ("inbound.messages", 0)
    heavy = [
        msg(
            "user",
            "x",
            metadata={"k": "v" * 10_000},
            attachments=[Attachment(type="file", url="https://x.test/f")],
        )
        for _ in range(5)
    ]
    bound = sum(message_bytes(m) for m in heavy) + 1_500  # room for one conversation's overhead
    cache = HistoryCache(1_000, max_chars=100_000, max_bytes=bound)
    small, growing = cache.loaded(None, asked=22), cache.loaded(None, asked=22)
    cache.put(("c", "small"), p, cache.epoch(p), small)
    cache.put(("c", "growing"), p, cache.epoch(p), growing)
    for m in heavy:  # as the service adds each message after taking the conversation
        growing.add(m)
    assert cache.get(("c", "small"), 20) is None
    assert cache.get(("c", "growing"), 20) is growing
    assert cache.bytes == growing.size <= bound
    cache.revoke({p})
    assert cache.bytes == 0 and len(cache) == 0


# -- LLM retries -------------------------------------------------------------------


class FakeModel:
    provider = "fake"

    def __init__(self, *outcomes: LlmCallFailed | str) -> None:
        self.outcomes = list(outcomes)
        self.timeouts: list[float] = []

    async def complete(
        self,
        messages: list[ChatMessage],
        *,
        model: str,
        temperature: float,
        timeout_s: float,
        tools: list[dict[str, Any]] | None = None,
    ) -> Completion:
        self.timeouts.append(timeout_s)
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, LlmCallFailed):
            raise outcome
        return Completion(text=outcome, provider="fake", model=model, latency_ms=1.0)

    async def close(self) -> None:
        return None


def failure(
    kind: str = "http_503", *, retryable: bool = True, after: float | None = None
) -> LlmCallFailed:
    return LlmCallFailed(kind, kind, retryable=retryable, retry_after_s=after)


async def run(model: FakeModel, policy: RetryPolicy) -> tuple[Completion, list[float], list[str]]:
    pauses: list[float] = []
    errors: list[str] = []

    async def sleep(s: float) -> None:
        pauses.append(s)

    done = await complete_with_retries(
        model,
        [{"role": "user", "content": "x"}],
        model_name="m",
        temperature=0.5,
        policy=policy,
        on_error=lambda e: errors.append(e.kind),
        sleep=sleep,
    )
    return done, pauses, errors


async def test_transient_failures_are_retried_with_growing_backoff() -> None:
    model = FakeModel(failure("timeout"), failure("rate_limited"), "ok")
    done, pauses, errors = await run(model, RetryPolicy(attempts=3, backoff_s=1.0))
    assert done.text == "ok"
    assert errors == ["timeout", "rate_limited"]
    assert 0.5 <= pauses[0] <= 1.0 and 1.0 <= pauses[1] <= 2.0


async def test_retry_after_is_honoured() -> None:
    done, pauses, _ = await run(
        FakeModel(failure("rate_limited", after=7.0), "ok"), RetryPolicy(backoff_s=0.1)
    )
    assert done.text == "ok" and pauses == [7.0]


async def test_a_client_error_is_not_retried() -> None:
    model = FakeModel(failure("http_400", retryable=False), "never")
    with pytest.raises(LlmCallFailed) as raised:
        await run(model, RetryPolicy(attempts=5))
    assert raised.value.kind == "http_400"
    assert model.outcomes == ["never"]


async def test_retries_stop_at_the_attempt_limit() -> None:
    model = FakeModel(failure(), failure(), failure(), "too late")
    with pytest.raises(LlmCallFailed):
        await run(model, RetryPolicy(attempts=3, backoff_s=0.0))
    assert model.outcomes == ["too late"]


async def test_retries_stop_when_the_next_pause_would_pass_the_budget() -> None:
    model = FakeModel(failure(after=30.0), "too late")
    with pytest.raises(LlmCallFailed):
        await run(model, RetryPolicy(attempts=5, budget_s=10.0, timeout_s=5.0))
    assert model.outcomes == ["too late"]
    assert model.timeouts == [5.0]  # one call's timeout never exceeds the budget left


# -- offline responder -------------------------------------------------------------


async def test_the_offline_responder_says_what_it_is() -> None:
    done = await OfflineResponder().complete(
        [{"role": "system", "content": "S"}, {"role": "user", "content": "hello there"}],
        model="gpt-x",
        temperature=0.1,
        timeout_s=1,
    )
    assert done.provider == OFFLINE_PROVIDER
    assert done.text.startswith(OFFLINE_LABEL)
    assert "hello there" in done.text
    assert done.prompt_tokens is None and done.model is None


# -- the service around a failing write --------------------------------------------


class MemoryRepository:
    """The repository's contract, in memory; ``fail_reply_writes`` makes the next
    reply writes fail as a database outage would."""

    def __init__(self) -> None:
        self.docs: dict[tuple[str, str], StoredMessage] = {}
        self.fail_reply_writes = 0

    async def insert_incoming(self, doc: dict[str, Any]) -> bool:
        return await self._insert(StoredMessage.model_validate(doc))

    async def insert_reply(self, message: StoredMessage) -> bool:
        if self.fail_reply_writes:
            self.fail_reply_writes -= 1
            raise ConnectionError("database unreachable")
        return await self._insert(message)

    async def _insert(self, message: StoredMessage) -> bool:
        return self.docs.setdefault((message.channel_id, message.message_id), message) is message

    async def touch_conversation(self, *args: Any) -> None:
        return None

    async def get(self, channel_id: str, message_id: str) -> StoredMessage | None:
        return self.docs.get((channel_id, message_id))

    async def recent(
        self, channel_id: str, sender_id: str, limit: int
    ) -> list[StoredMessage] | None:
        return None


class Channels:
    async def get(self, channel_id: str) -> Channel:
        now = datetime.now(UTC)
        return Channel(
            id=channel_id,
            name="t",
            outgoing_url="https://x.test",
            hmac_secret="s",
            created_at=now,
            updated_at=now,
        )


class Publisher:
    def __init__(self) -> None:
        self.published: list[BaseModel] = []

    async def publish(self, topic: str, event: BaseModel, key: bytes) -> None:
        self.published.append(event)


async def test_a_retry_after_a_failed_write_sends_the_same_answer_without_a_second_llm_call() -> (
    None
):
    repo, publisher = MemoryRepository(), Publisher()
    model = FakeModel("the one answer", "a second answer")
    service = AssistantService(
        settings=AssistantServiceSettings(),
        channels=cast(ChannelCache, Channels()),
        conversations=cast(ConversationRepository, repo),
        history=HistoryCache(10, max_chars=10_000),
        model=model,
        publisher=cast(EventPublisher, publisher),
    )
    message = InboundMessage(
        channel_id="cm_t", message_id="m1", sender_id="u", text="hi", received_at=datetime.now(UTC)
    )
    repo.fail_reply_writes = 1
    with pytest.raises(ConnectionError):
        await service.handle(message, ("inbound.messages", 0))
    assert publisher.published == []
    await service.handle(message, ("inbound.messages", 0))  # the pipeline's retry
    assert model.outcomes == ["a second answer"]  # the LLM was asked once
    (reply,) = publisher.published
    assert reply.model_dump()["text"] == "the one answer"
    stored = repo.docs[("cm_t", reply_id_for("cm_t", "m1"))]
    assert stored.text == "the one answer"
    assert stored.in_reply_to_handling == Handling(outcome="answered")
    by_id = {m.message_id: m for m in repo.docs.values()}
    assert answered(repo.docs[("cm_t", "m1")], by_id).status == "replied"
