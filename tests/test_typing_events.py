"""Typing events (issue #13), across the real services, broker and database: an
opt-in {"event": "typing"} the assistant announces before asking the model,
delivered once, best-effort, signed, in the request log, never after the reply
it announces and never part of the history the model reads."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from happ_common.deliveries import delivery_id
from happ_common.events import ASSISTANT, TYPING, OutboundReply
from happ_common.ids import conversation_key
from happ_common.kafka import DirectPublisher
from happ_common.settings import InfraSettings
from happ_common.topics import OUTBOUND_REPLIES
from happ_devtools.fake_llm import ModelScript
from happ_devtools.receiver import Received, signature_ok
from tests.conftest import System, eventually

RETRY_DELAYS = (1.0, 2.0, 3.0)  # HAPP_DELIVERY_RETRY_DELAYS in conftest


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def typing_channel(
    system: System, script: ModelScript | None = None, **fields: Any
) -> tuple[dict[str, Any], str, str]:
    """A channel with its own model and receiver path; (channel, model, path)."""
    model = unique("model")
    system.llm.models[model] = script or ModelScript()
    path = "/" + unique("typing")
    fields.setdefault("typing_events", True)
    channel = await system.create_channel(path, assistant={"model": model}, **fields)
    return channel, model, path


async def say(system: System, channel: dict[str, Any], sender: str, text: str) -> str:
    resp = await system.send(channel["id"], {"sender_id": sender, "text": text})
    assert resp.status_code == 200, resp.text
    message_id: str = resp.json()["message_id"]
    return message_id


def kinds(received: list[Received]) -> list[tuple[str, str]]:
    """(event or "reply", in_reply_to) of each POST, in arrival order."""
    return [(r.json().get("event", "reply"), r.json()["in_reply_to"]) for r in received]


async def test_typing_comes_before_the_reply_signed_and_logged(system: System) -> None:
    # The model takes a while: the typing event goes out when the assistant
    # starts on the message, not with the reply.
    channel, _, path = await typing_channel(system, ModelScript(delay_s=1.0))
    assert channel["typing_events"] is True
    message_id = await say(system, channel, "u1", "Hello")
    typing, reply = await system.receiver.wait_for(path, 2)

    assert kinds([typing, reply]) == [("typing", message_id), ("reply", message_id)]
    assert reply.at - typing.at > 0.5
    body = typing.json()
    assert body["text"] == ""
    assert body["to"] == "u1"
    assert body["author"] == {"type": "assistant", "name": "Assistant"}
    assert body["message_id"].startswith("typ_")
    assert typing.headers["X-HAPP-Delivery-Id"] == body["message_id"]
    assert typing.headers["X-HAPP-Attempt"] == "1"
    assert signature_ok(typing, channel["hmac_secret"])

    async def logged() -> bool:
        return len(await system.log(channel["id"], direction="outgoing")) == 2

    await eventually(logged, timeout_s=10)
    resp = await system.admin.get(
        f"/api/channels/{channel['id']}/logs",
        params={"direction": "outgoing", "message_id": body["message_id"]},
    )
    (entry,) = resp.json()["items"]
    assert entry["status_code"] == 200 and entry["attempt"] == 1
    assert '"event":"typing"' in entry["request_body"]


async def test_no_typing_without_opting_in_nor_for_what_the_model_does_not_answer(
    system: System,
) -> None:
    plain, _, plain_path = await typing_channel(system, typing_events=False)
    assert plain["typing_events"] is False
    await say(system, plain, "u1", "Hello")
    await system.receiver.wait_for(plain_path, 1)

    filtered, model, path = await typing_channel(system, ignore_senders=["bot"])
    await say(system, filtered, "bot", "ignored")
    answered = await say(system, filtered, "human", "answered")
    await system.receiver.wait_for(path, 2)
    await asyncio.sleep(1)
    assert kinds(system.receiver.on_path(path)) == [("typing", answered), ("reply", answered)]
    assert [r.json().get("event") for r in system.receiver.on_path(plain_path)] == [None]
    assert len(system.llm.requests_for(model)) == 1

    # Turned on by PATCH, off again.
    resp = await system.admin.patch(f"/api/channels/{plain['id']}", json={"typing_events": True})
    assert resp.json()["typing_events"] is True


async def test_a_failing_typing_post_is_not_retried_and_does_not_hold_the_reply(
    system: System,
) -> None:
    channel, _, path = await typing_channel(system)
    system.receiver.decide[path] = lambda got: (
        (500, 0.0) if got.json().get("event") == "typing" else (200, 0.0)
    )
    message_id = await say(system, channel, "u1", "Hello")
    await system.receiver.wait_for(path, 2)
    # Long enough for a retry series' first retry to have come.
    await asyncio.sleep(RETRY_DELAYS[0] + 1.5)
    got = system.receiver.on_path(path)
    assert kinds(got) == [("typing", message_id), ("reply", message_id)]
    assert got[1].headers["X-HAPP-Attempt"] == "1"

    async def logged() -> bool:
        return len(await system.log(channel["id"], direction="outgoing")) == 2

    await eventually(logged, timeout_s=10)
    (failed,) = await system.log(channel["id"], message_id=got[0].json()["message_id"])
    assert failed["error_code"] == "HTTP_500"
    # No delivery state: nothing to retry, resend or show as a message's status.
    typing_id = got[0].json()["message_id"]
    state = await system.db.deliveries.find_one({"_id": delivery_id(channel["id"], typing_id)})
    assert state is None


async def test_typing_is_dropped_rather_than_sent_behind_a_retrying_reply(system: System) -> None:
    channel, _, path = await typing_channel(system)
    failures: dict[str, int] = {}

    def first_reply_fails_twice(got: Received) -> tuple[int, float]:
        body = got.json()
        if body["text"] == "Echo: one":
            failures["one"] = failures.get("one", 0) + 1
            if failures["one"] <= 2:
                return (503, 0.0)
        return (200, 0.0)

    system.receiver.decide[path] = first_reply_fails_twice
    first = await say(system, channel, "u1", "one")
    await system.receiver.wait_for(path, 2)  # typing, then the reply's first attempt
    # The reply is in its retry series (its conversation's gate closed) for
    # 1 + 2 s: the next message's typing event would wait behind it.
    second = await say(system, channel, "u1", "two")
    await system.receiver.wait_for(path, 5, timeout_s=30)
    await asyncio.sleep(1)
    got = system.receiver.on_path(path)
    attempts = [r.headers["X-HAPP-Attempt"] for r in got]
    assert [(k, m, a) for (k, m), a in zip(kinds(got), attempts, strict=True)] == [
        ("typing", first, "1"),
        ("reply", first, "1"),
        ("reply", first, "2"),
        ("reply", first, "3"),
        ("reply", second, "1"),
    ]


async def test_typing_is_never_in_the_history_the_model_reads(system: System) -> None:
    channel, model, path = await typing_channel(system)
    for n, text in enumerate(("first question", "second question"), 1):
        await say(system, channel, "u1", text)
        await system.receiver.wait_for(path, 2 * n)
    assert [r.json().get("event", "reply") for r in system.receiver.on_path(path)] == [
        "typing",
        "reply",
        "typing",
        "reply",
    ]
    second = system.llm.requests_for(model)[-1]
    roles = [(m["role"], m["content"]) for m in second["messages"] if m["role"] != "system"]
    assert roles == [
        ("user", "first question"),
        ("assistant", "Echo: first question"),
        ("user", "second question"),
    ]
    # What is stored, for the whole channel: typing events never are.
    stored = await system.db.messages.find({"channel_id": channel["id"]}).to_list(None)
    assert len(stored) == 4
    assert not [m for m in stored if m["message_id"].startswith("typ_") or m.get("event")]
    conversation = (
        await system.admin.get(f"/api/channels/{channel['id']}/conversations/u1/messages")
    ).json()["items"]
    assert len(conversation) == 4


async def test_a_typing_event_met_again_after_its_reply_or_too_late_is_dropped(
    system: System,
) -> None:
    """A typing record redelivered after a crash finds its reply delivered; one
    read long after it was published announces nothing any more."""
    channel, _, path = await typing_channel(system)
    message_id = await say(system, channel, "u1", "Hello")
    typing, _ = await system.receiver.wait_for(path, 2)
    again = OutboundReply(
        channel_id=channel["id"],
        reply_id=typing.json()["message_id"],
        in_reply_to=message_id,
        to="u1",
        text="",
        created_at=datetime.now(UTC),
        author=ASSISTANT,
        event=TYPING,
    )
    stale = again.model_copy(
        update={
            "reply_id": "typ_stale",
            "in_reply_to": "msg-not-answered-yet",
            "created_at": datetime.now(UTC) - timedelta(minutes=5),
        }
    )
    fresh = stale.model_copy(update={"reply_id": "typ_fresh", "created_at": datetime.now(UTC)})
    publisher = DirectPublisher(
        InfraSettings(kafka_bootstrap_servers=system.stack.kafka_bootstrap), client_id="test"
    )
    await publisher.start()
    try:
        for event in (again, stale, fresh):
            await publisher.publish(
                OUTBOUND_REPLIES, event, key=conversation_key(channel["id"], "u1")
            )
    finally:
        await publisher.stop()
    # The last one, in the same conversation's order, shows the others were read.
    await system.receiver.wait_for(path, 3)
    await asyncio.sleep(0.5)
    assert [r.json()["message_id"] for r in system.receiver.on_path(path)][2:] == ["typ_fresh"]


async def test_a_hanging_typing_post_holds_the_reply_only_for_its_short_timeout(
    system: System,
) -> None:
    # conftest: HAPP_DELIVERY_TIMEOUT_S=2, so the typing timeout is min(2, 2) s.
    channel, _, path = await typing_channel(system)
    system.receiver.decide[path] = lambda got: (
        (200, 6.0) if got.json().get("event") == "typing" else (200, 0.0)
    )
    message_id = await say(system, channel, "u1", "Hello")
    typing, reply = await system.receiver.wait_for(path, 2, timeout_s=20)
    assert kinds([typing, reply]) == [("typing", message_id), ("reply", message_id)]
    # The reply went once the typing POST timed out, long before the endpoint answered it.
    assert 1.5 < reply.at - typing.at < 4.5
    assert reply.headers["X-HAPP-Attempt"] == "1"

    async def logged() -> bool:
        entries = await system.log(channel["id"], message_id=typing.json()["message_id"])
        return [e["error_code"] for e in entries] == ["TIMEOUT"]

    await eventually(logged, timeout_s=10)
