"""Operators, handoff and filters (SPEC §6a), across the real services, broker and database.

Each test gives its channel a model of its own on the fake LLM, so it can tell
which messages reached the model, and reads what the user was sent at the
test receiver, in the order it arrived.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from happ_admin.conversations.repository import ConversationRepository
from happ_devtools.fake_llm import HANDOFF_PHRASE, ModelScript
from happ_devtools.receiver import signature_ok
from tests.conftest import System, eventually
from tests.test_assistant_flow import inbound, metric, produce


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def operator_channel(
    system: System, script: ModelScript | None = None, **fields: Any
) -> tuple[dict[str, Any], str, str]:
    """A channel with its own model and receiver path; (channel, model, path)."""
    model = unique("model")
    system.llm.models[model] = script or ModelScript()
    path = "/" + unique("ops")
    channel = await system.create_channel(path, assistant={"model": model}, **fields)
    return channel, model, path


def conv(channel: dict[str, Any], sender: str, action: str = "") -> str:
    return f"/api/channels/{channel['id']}/conversations/{quote(sender, safe='')}{action}"


async def say(system: System, channel: dict[str, Any], sender: str, text: str) -> str:
    resp = await system.send(channel["id"], {"sender_id": sender, "text": text})
    assert resp.status_code == 200, resp.text
    message_id: str = resp.json()["message_id"]
    return message_id


async def handling(system: System, channel: dict[str, Any], message_id: str) -> dict[str, Any]:
    # Read as the admin API reads it: what came of a message is stored on its
    # reply, notice or event when one went out (happ_common.messages.answered).
    repo = ConversationRepository(system.db)

    async def decided() -> bool:
        found = await repo.message(channel["id"], message_id)
        return found is not None and (found.handling is not None or found.status == "replied")

    await eventually(decided)
    found = await repo.message(channel["id"], message_id)
    assert found is not None
    result: dict[str, Any] = (
        found.handling.model_dump() if found.handling else {"outcome": "answered"}
    )
    return result


async def state(system: System, channel: dict[str, Any], sender: str) -> dict[str, Any]:
    doc = await system.db.conversations.find_one({"_id": f"{channel['id']}\n{sender}"})
    assert doc is not None
    return doc


def bodies(system: System, path: str) -> list[dict[str, Any]]:
    return [r.json() for r in system.receiver.on_path(path)]


async def test_operators_mode_sends_no_ai_reply_and_tells_the_user_once(system: System) -> None:
    channel, model, path = await operator_channel(
        system, mode="operators", handoff_text="A person will answer you shortly."
    )
    first = await say(system, channel, "u1", "Hello there")
    second = await say(system, channel, "u1", "Anyone?")
    assert await handling(system, channel, first) == {"outcome": "handoff", "trigger": "mode"}
    assert (await handling(system, channel, second))["outcome"] == "for_operator"

    (event,) = [r.json() for r in await system.receiver.wait_for(path, 1)]
    assert event["event"] == "handoff"
    assert event["text"] == "A person will answer you shortly."
    assert event["author"] == {"type": "system", "name": "System"}
    assert event["in_reply_to"] == first
    await asyncio.sleep(1)
    assert len(bodies(system, path)) == 1  # the second message got nothing
    assert system.llm.requests_for(model) == []

    doc = await state(system, channel, "u1")
    assert (doc["state"], doc["unread"], doc["handoff_trigger"]) == ("waiting", 2, "mode")
    inbox = (await system.admin.get("/api/inbox")).json()
    waiting = [c for c in inbox["waiting"] if c["channel_id"] == channel["id"]]
    assert [(c["sender_id"], c["unread"], c["last_text"]) for c in waiting] == [
        ("u1", 2, "Anyone?")
    ]


async def test_keyword_handoff_take_over_reply_and_hand_back_keep_one_order(
    system: System,
) -> None:
    channel, model, path = await operator_channel(
        system, mode="assistant_with_handoff", handoff_keywords=["human agent"]
    )
    await say(system, channel, "u2", "What are your hours?")
    await system.receiver.wait_for(path, 1)
    asked = await say(system, channel, "u2", "I want a Human  Agent now")
    assert await handling(system, channel, asked) == {
        "outcome": "handoff",
        "trigger": "keyword:human agent",
    }
    await system.receiver.wait_for(path, 2)

    took = await system.admin.post(conv(channel, "u2", "/take"))
    assert took.status_code == 200, took.text
    assert took.json()["state"] == "operator"
    assert took.json()["operator"]["name"] == "Admin"
    held = await say(system, channel, "u2", "Hello? Still there?")
    sent = await system.admin.post(
        conv(channel, "u2", "/messages"),
        json={
            "text": "Hi, this is Ann from support.",
            "attachments": [{"type": "file", "url": "https://example.com/terms.pdf"}],
        },
    )
    assert sent.status_code == 202, sent.text
    op_id = sent.json()["message_id"]
    assert sent.json()["role"] == "operator"
    back = await system.admin.post(conv(channel, "u2", "/hand-back"))
    assert back.status_code == 200 and back.json()["state"] == "assistant"
    await say(system, channel, "u2", "Thanks, one more question")

    received = await system.receiver.wait_for(path, 6)
    # Signed like every reply, notices and the person's reply included.
    assert all(signature_ok(r, channel["hmac_secret"]) for r in received)
    got = [r.json() for r in received]
    assert [(b["author"]["type"], b.get("event")) for b in got] == [
        ("assistant", None),
        ("system", "handoff"),
        ("operator", "operator_joined"),  # the take, by a person, once it was waiting
        ("operator", None),
        ("operator", "hand_back"),
        ("assistant", None),
    ]
    assert got[0]["text"] == "Echo: What are your hours?"
    assert got[3]["message_id"] == op_id and got[3]["text"] == "Hi, this is Ann from support."
    assert got[3]["attachments"][0]["url"] == "https://example.com/terms.pdf"
    assert (await handling(system, channel, held))["outcome"] == "for_operator"
    # While held, the model saw nothing; after the hand-back it sees the person's reply.
    texts = [r["messages"][-1]["content"] for r in system.llm.requests_for(model)]
    assert texts == ["What are your hours?", "Thanks, one more question"]
    history = system.llm.requests_for(model)[-1]["messages"]
    assert {"role": "assistant", "content": "Hi, this is Ann from support."} in history

    async def operator_reply_delivered() -> bool:
        page = (await system.admin.get(conv(channel, "u2", "/messages"))).json()
        mine = [m for m in page["items"] if m["message_id"] == op_id]
        return bool(mine) and mine[0]["delivery"]["status"] == "delivered"

    await eventually(operator_reply_delivered)


async def test_the_models_handoff_tool_call_moves_the_conversation_to_people(
    system: System,
) -> None:
    channel, model, path = await operator_channel(system, mode="assistant_with_handoff")
    asked = await say(system, channel, "u3", f"Please, {HANDOFF_PHRASE}!")
    assert await handling(system, channel, asked) == {"outcome": "handoff", "trigger": "tool"}
    (event,) = [r.json() for r in await system.receiver.wait_for(path, 1)]
    assert event["event"] == "handoff"
    (request,) = system.llm.requests_for(model)
    assert request["tools"][0]["function"]["name"] == "handoff_to_operator"
    doc = await state(system, channel, "u3")
    assert (doc["state"], doc["handoff_trigger"]) == ("waiting", "tool")


async def test_a_failing_llm_sends_the_fallback_and_hands_off(system: System) -> None:
    channel, _, path = await operator_channel(
        system, ModelScript(fail_with=500), mode="assistant_with_handoff"
    )
    asked = await say(system, channel, "u4", "Help me")
    got = [r.json() for r in await system.receiver.wait_for(path, 2)]
    assert [(b["author"]["type"], b.get("event")) for b in got] == [
        ("assistant", None),
        ("system", "handoff"),
    ]
    assert got[0]["text"] == channel["assistant"]["fallback_text"]
    assert await handling(system, channel, asked) == {"outcome": "handoff", "trigger": "fallback"}
    assert (await state(system, channel, "u4"))["state"] == "waiting"


async def test_an_operator_taking_over_silences_the_assistant_even_mid_answer(
    system: System,
) -> None:
    # The model takes 2 s: the operator takes over while it answers the first
    # message, and two more messages are queued behind it.
    channel, model, path = await operator_channel(
        system, ModelScript(delay_s=2.0), mode="assistant_with_handoff"
    )
    first = await say(system, channel, "u5", "first")

    async def model_asked() -> bool:
        return len(system.llm.requests_for(model)) == 1

    await eventually(model_asked)
    took = await system.admin.post(conv(channel, "u5", "/take"))
    assert took.status_code == 200, took.text
    queued = [await say(system, channel, "u5", t) for t in ("second", "third")]
    for message_id in (first, *queued):
        assert (await handling(system, channel, message_id))["outcome"] == "for_operator"
    got = [r.json() for r in await system.receiver.wait_for(path, 1)]
    await asyncio.sleep(1.5)
    got = bodies(system, path)
    # Only the handoff the take announced: the answer the model finished is dropped.
    assert [(b["author"]["type"], b.get("event")) for b in got] == [("operator", "handoff")]
    assert got[0]["text"] == channel["handoff_text"]
    assert len(system.llm.requests_for(model)) == 1
    doc = await state(system, channel, "u5")
    assert (doc["state"], doc["unread"]) == ("operator", 3)


async def test_filters_ignore_route_off_hours_and_pace(system: System) -> None:
    zone = "Pacific/Kiritimati"
    today = datetime.now(UTC).astimezone(ZoneInfo(zone))
    closed_day = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"][(today.weekday() + 3) % 7]
    channel, _model, path = await operator_channel(
        system,
        mode="assistant_with_handoff",
        ignore_senders=["bot-7"],
        routes=[{"match": "regex", "pattern": r"order\s+#?\d+"}],
        sender_rate_per_minute=2,
    )
    ignored = await say(system, channel, "bot-7", "spam")
    routed = await say(system, channel, "u6", "Where is order #1234?")
    assert await handling(system, channel, ignored) == {
        "outcome": "ignored",
        "trigger": "ignore_senders",
    }
    assert await handling(system, channel, routed) == {
        "outcome": "handoff",
        "trigger": r"route:order\s+#?\d+",
    }
    paced = [await say(system, channel, "u7", f"quick {i}") for i in range(5)]
    outcomes = [(await handling(system, channel, m))["outcome"] for m in paced]
    assert outcomes == ["answered", "answered", "rate_notice", "rate_limited", "rate_limited"]
    await system.receiver.wait_for(path, 4)  # route handoff, two answers, one notice
    await asyncio.sleep(1)
    got = bodies(system, path)
    assert sorted((b["to"], b["author"]["type"], b.get("event")) for b in got) == [
        ("u6", "system", "handoff"),
        ("u7", "assistant", None),
        ("u7", "assistant", None),
        ("u7", "system", None),
    ]
    assert all(b["to"] != "bot-7" for b in got)
    notice = next(b for b in got if b["to"] == "u7" and b["author"]["type"] == "system")
    assert notice["text"] == channel["rate_notice_text"]

    patched = await system.admin.patch(
        f"/api/channels/{channel['id']}",
        json={
            "working_hours": {
                "timezone": zone,
                "intervals": [{"days": [closed_day], "start": "00:00", "end": "24:00"}],
            },
            "off_hours_text": "We are closed; back tomorrow.",
        },
    )
    assert patched.status_code == 200, patched.text
    await asyncio.sleep(1.5)  # the channel cache's TTL
    late = await say(system, channel, "u8", "Are you there?")
    assert await handling(system, channel, late) == {
        "outcome": "off_hours",
        "trigger": "working_hours",
    }
    replies = await system.receiver.wait_for(path, 5)
    assert replies[-1].json()["text"] == "We are closed; back tomorrow."
    assert "Are you there?" not in [r["messages"][-1]["content"] for r in system.llm.requests]

    cleared = await system.admin.patch(
        f"/api/channels/{channel['id']}", json={"working_hours": None}
    )
    assert cleared.json()["working_hours"] is None
    assert cleared.json()["off_hours_text"] == "We are closed; back tomorrow."


async def test_rules_are_validated_with_a_clear_error(system: System) -> None:
    channel, _, _ = await operator_channel(system)
    cases = [
        ({"routes": [{"match": "regex", "pattern": "(unclosed"}]}, "routes"),
        ({"working_hours": {"timezone": "Mars/Olympus", "intervals": []}}, "working_hours"),
        (
            {
                "working_hours": {
                    "timezone": "UTC",
                    "intervals": [{"days": ["mon"], "start": "18:00", "end": "09:00"}],
                }
            },
            "working_hours",
        ),
        ({"mode": "robots"}, "mode"),
        ({"sender_rate_per_minute": 0}, "sender_rate_per_minute"),
    ]
    for body, field in cases:
        resp = await system.admin.patch(f"/api/channels/{channel['id']}", json=body)
        assert resp.status_code == 422, (body, resp.text)
        fields = [d["field"] for d in resp.json()["error"]["details"]]
        assert any(f.startswith(field) for f in fields), (body, fields)
    created = await system.admin.post(
        "/api/channels",
        json={"name": "x", "outgoing_url": system.endpoint("/x"), "mode": "operators"},
    )
    assert created.status_code == 201 and created.json()["mode"] == "operators"


async def test_inbox_actions_refuse_what_does_not_apply(system: System) -> None:
    plain, _, path = await operator_channel(system)  # mode assistant
    await say(system, plain, "u9", "hi")
    await system.receiver.wait_for(path, 1)
    refused = await system.admin.post(conv(plain, "u9", "/take"))
    assert (refused.status_code, refused.json()["error"]["code"]) == (409, "HANDOFF_DISABLED")

    channel, _, path = await operator_channel(system, mode="operators")
    await say(system, channel, "u10", "hi")
    await system.receiver.wait_for(path, 1)
    early = await system.admin.post(conv(channel, "u10", "/messages"), json={"text": "hello"})
    assert (early.status_code, early.json()["error"]["code"]) == (409, "NOT_HOLDING")
    missing = await system.admin.post(conv(channel, "nobody", "/take"))
    assert (missing.status_code, missing.json()["error"]["code"]) == (
        404,
        "CONVERSATION_NOT_FOUND",
    )
    assert (await system.admin.post(conv(channel, "u10", "/take"))).status_code == 200
    empty = await system.admin.post(conv(channel, "u10", "/messages"), json={"text": "  "})
    assert empty.status_code == 422
    assert (await system.admin.post(conv(channel, "u10", "/read"))).status_code == 204
    assert (await state(system, channel, "u10"))["unread"] == 0
    closed = await system.admin.post(conv(channel, "u10", "/close"))
    assert closed.json()["state"] == "closed"
    got = await system.receiver.wait_for(path, 3)
    assert got[-1].json()["event"] == "closed"
    # A new message reopens it, for the operators again.
    again = await say(system, channel, "u10", "back again")
    assert await handling(system, channel, again) == {"outcome": "handoff", "trigger": "mode"}


async def test_live_updates_stream_a_conversation_as_it_changes(system: System) -> None:
    channel, _, _ = await operator_channel(system, mode="operators")
    seen: list[dict[str, Any]] = []

    async def listen() -> None:
        async with system.admin.stream("GET", "/api/events", timeout=30) as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            event = None
            async for line in resp.aiter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "conversation":
                    item = json.loads(line[6:])
                    if item["channel_id"] == channel["id"]:
                        seen.append(item)
                        if item["state"] == "waiting" and item["unread"] >= 1:
                            return

    listener = asyncio.create_task(listen())
    await asyncio.sleep(0.5)
    await say(system, channel, "live", "is anybody there?")
    await asyncio.wait_for(listener, 20)
    assert seen[-1]["sender_id"] == "live"
    assert seen[-1]["last_text"] == "is anybody there?"


async def admin_metric(system: System, name: str) -> float:
    text = (await system.http.get(system.url("admin", "/metrics"))).text
    found = re.search(rf"^{re.escape(name)} ([\d.e+-]+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def test_metrics_count_handoffs_and_waiting_conversations(system: System) -> None:
    mode_handoffs = 'happ_handoffs_total{trigger="mode"}'
    handoffs_before = await metric(system, mode_handoffs)
    replies_before = await admin_metric(system, "happ_operator_first_reply_seconds_count")
    taken_before = await admin_metric(system, 'happ_handoffs_total{trigger="operator"}')
    channel, _, path = await operator_channel(system, mode="operators")
    await say(system, channel, "m1", "hello")
    await system.receiver.wait_for(path, 1)
    assert await metric(system, mode_handoffs) == handoffs_before + 1

    async def counted_waiting() -> bool:  # the admin counts every 10 s
        return await admin_metric(system, "happ_conversations_waiting") >= 1

    await eventually(counted_waiting, timeout_s=15)
    await system.admin.post(conv(channel, "m1", "/take"))
    for text in ("Hi!", "Anything else?"):  # only the first reply after a handoff counts
        sent = await system.admin.post(conv(channel, "m1", "/messages"), json={"text": text})
        assert sent.status_code == 202
    after = await admin_metric(system, "happ_operator_first_reply_seconds_count")
    assert after == replies_before + 1
    taken = await admin_metric(system, 'happ_handoffs_total{trigger="operator"}')
    assert taken == taken_before  # taken from "waiting": the handoff was the mode's, counted once


async def test_a_handoff_recorded_by_the_claim_still_reaches_the_user_when_redelivered(
    system: System,
) -> None:
    # The claim stored "waiting, handed over by M for the fallback", then the
    # handling was cut short (a crash, a failed write) before anything was stored
    # or published: M's redelivery must send the fallback and the handoff event,
    # without asking the model again.
    channel, model, path = await operator_channel(system, mode="assistant_with_handoff")
    msg = inbound(channel["id"], "cut", "help")
    await system.db.conversations.insert_one(
        {
            "_id": f"{channel['id']}\ncut",
            "channel_id": channel["id"],
            "sender_id": "cut",
            "state": "waiting",
            "claim": msg.message_id,
            "handoff_by": msg.message_id,
            "handoff_trigger": "fallback",
        }
    )
    await produce(system, [msg])
    got = [r.json() for r in await system.receiver.wait_for(path, 2)]
    assert [(b["author"]["type"], b.get("event"), b["text"]) for b in got] == [
        ("assistant", None, channel["assistant"]["fallback_text"]),
        ("system", "handoff", channel["handoff_text"]),
    ]
    assert await handling(system, channel, msg.message_id) == {
        "outcome": "handoff",
        "trigger": "fallback",
    }
    assert system.llm.requests_for(model) == []
    doc = await state(system, channel, "cut")
    assert doc["state"] == "waiting"


async def test_a_message_redelivered_after_a_take_over_is_left_to_the_person(
    system: System,
) -> None:
    # M was claimed by the assistant, then an operator took the conversation
    # before M's answer was stored: M's redelivery leaves it to the person, and
    # the model is not asked.
    channel, model, path = await operator_channel(system, mode="assistant_with_handoff")
    msg = inbound(channel["id"], "late", "question")
    await system.db.conversations.insert_one(
        {
            "_id": f"{channel['id']}\nlate",
            "channel_id": channel["id"],
            "sender_id": "late",
            "state": "operator",
            "operator": {"type": "operator", "id": "usr_x", "name": "Ann"},
            "claim": msg.message_id,
        }
    )
    await produce(system, [msg])
    assert (await handling(system, channel, msg.message_id))["outcome"] == "for_operator"
    await asyncio.sleep(1)
    assert bodies(system, path) == []
    doc = await state(system, channel, "late")
    assert (doc["state"], doc["operator"]["name"], doc["unread"]) == ("operator", "Ann", 1)
    assert system.llm.requests_for(model) == []
