"""Send test, message status, resend and conversations, against the running system."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from standardwebhooks.webhooks import Webhook

from happ_common.deliveries import STRANDED_CLAIM_S, DeliveryStates
from happ_common.ids import new_log_id
from happ_common.mongo import REQUEST_LOG
from happ_common.signing import happ_signature
from happ_devtools.procs import free_port
from tests.conftest import System, eventually


async def _status(system: System, channel_id: str, message_id: str) -> dict[str, Any]:
    resp = await system.admin.get(f"/api/channels/{channel_id}/messages/{message_id}")
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def _wait_status(
    system: System, channel_id: str, message_id: str, status: str, timeout_s: float = 30
) -> dict[str, Any]:
    async def reached() -> bool:
        resp = await system.admin.get(f"/api/channels/{channel_id}/messages/{message_id}")
        # Up to one request-log batch (0.25 s) after the webhook's 200, nothing
        # in the database knows the message yet.
        return resp.status_code == 200 and resp.json()["status"] == status

    await eventually(reached, timeout_s=timeout_s)
    return await _status(system, channel_id, message_id)


# --- send test -----------------------------------------------------------------------------


async def test_send_test_makes_a_real_signed_request_and_logs_it(system: System) -> None:
    c = await system.create_channel("/send-test")
    resp = await system.admin.post(f"/api/channels/{c['id']}/test")
    assert resp.status_code == 200, resp.text
    result = resp.json()
    assert result["ok"] is True
    assert result["status_code"] == 200
    assert result["error_code"] is None
    assert result["error_message"] is None
    assert 0 < result["response_time_ms"] < 5000

    (got,) = system.receiver.on_path("/send-test")
    body = got.json()
    assert body["test"] is True
    assert body["channel_id"] == c["id"]
    assert body["channel"] == "custom_messenger"
    assert body["message_id"] == result["message_id"]
    assert body["text"] == body["reply"]
    assert body["to"] == body["sender_id"]
    assert got.headers["X-HAPP-Signature"] == happ_signature(c["hmac_secret"], got.body)
    assert got.headers["X-HAPP-Attempt"] == "1"
    assert got.headers["X-HAPP-Delivery-Id"] == result["message_id"]
    Webhook(c["hmac_secret"]).verify(got.body, got.headers)

    entry = (await system.admin.get(f"/api/logs/{result['log_id']}")).json()
    assert entry["direction"] == "outgoing"
    assert entry["status_code"] == 200
    assert entry["attempt"] == 1
    assert entry["message_id"] == result["message_id"]
    assert entry["url"] == c["outgoing_url"]
    assert json.loads(entry["request_body"]) == body
    assert c["hmac_secret"] not in json.dumps(entry)


async def test_send_test_reports_failures_with_their_codes(system: System) -> None:
    system.receiver.behaviour["/test-500"] = (503, 0.0)
    c = await system.create_channel("/test-500")
    result = (await system.admin.post(f"/api/channels/{c['id']}/test")).json()
    assert result["ok"] is False
    assert result["status_code"] == 503
    assert result["error_code"] == "HTTP_503"
    assert "503" in result["error_message"]

    system.receiver.behaviour["/test-slow"] = (200, 3.0)  # the system's timeout is 2 s
    await system.admin.patch(
        f"/api/channels/{c['id']}", json={"outgoing_url": system.endpoint("/test-slow")}
    )
    slow = (await system.admin.post(f"/api/channels/{c['id']}/test")).json()
    assert slow["ok"] is False
    assert slow["status_code"] is None
    assert slow["error_code"] == "TIMEOUT"
    assert 1900 <= slow["response_time_ms"] < 3000

    await system.admin.patch(
        f"/api/channels/{c['id']}",
        json={"outgoing_url": f"https://localhost:{free_port()}/closed"},
    )
    down = (await system.admin.post(f"/api/channels/{c['id']}/test")).json()
    assert (down["ok"], down["status_code"], down["error_code"]) == (
        False,
        None,
        "ENDPOINT_UNREACHABLE",
    )
    entry = (await system.admin.get(f"/api/logs/{down['log_id']}")).json()
    assert entry["error_code"] == "ENDPOINT_UNREACHABLE"
    assert entry["attempt"] == 1


async def test_send_test_works_on_a_disconnected_channel(system: System) -> None:
    # The product page's reconnect procedure: confirm the endpoint, test, connect.
    c = await system.create_channel("/test-off")
    await system.admin.post(f"/api/channels/{c['id']}/disconnect")
    result = (await system.admin.post(f"/api/channels/{c['id']}/test")).json()
    assert result["ok"] is True
    assert len(system.receiver.on_path("/test-off")) == 1


# --- message status --------------------------------------------------------------------------


async def test_message_status_follows_a_message_to_delivery(system: System) -> None:
    c = await system.create_channel("/status")
    sent = await system.send(
        c["id"], {"sender_id": "st-user", "sender_name": "Stella", "text": "where am I?"}
    )
    message_id = sent.json()["message_id"]
    s = await _wait_status(system, c["id"], message_id, "delivered")
    assert s["message_id"] == message_id
    assert s["message"]["role"] == "user"
    assert s["message"]["text"] == "where am I?"
    assert s["message"]["status"] == "replied"
    reply = s["reply"]
    assert reply["role"] == "assistant"
    assert reply["in_reply_to"] == message_id
    assert reply["text"] == "Echo: where am I?"
    assert reply["delivery"] == {
        "status": "delivered",
        "attempts": 1,
        "last_status_code": 200,
        "last_error_code": None,
    }

    async def attempt_logged() -> bool:
        return len((await _status(system, c["id"], message_id))["attempts"]) == 1

    await eventually(attempt_logged)
    (attempt,) = (await _status(system, c["id"], message_id))["attempts"]
    assert attempt["message_id"] == reply["message_id"]
    assert attempt["attempt"] == 1
    assert attempt["status_code"] == 200

    # The reply's id leads to the same message.
    by_reply = await _status(system, c["id"], reply["message_id"])
    assert by_reply["message_id"] == message_id
    assert by_reply["status"] == "delivered"


async def test_message_known_only_to_the_ingress_is_accepted(system: System) -> None:
    c = await system.create_channel("/accepted")
    # The window between the webhook's 200 and the assistant storing the
    # message: only the ingress's request-log entry exists.
    await system.db[REQUEST_LOG].insert_one(
        {
            "_id": new_log_id(),
            "channel_id": c["id"],
            "direction": "incoming",
            "created_at": datetime.now(UTC),
            "method": "POST",
            "url": f"/webhook/{c['id']}",
            "status_code": 200,
            "error_code": None,
            "duration_ms": 3.0,
            "request_body": '{"sender_id": "u", "text": "in flight"}',
            "response_body": None,
            "message_id": "order/42 in flight",
            "attempt": None,
        }
    )
    # Integrator ids may hold any character, "/" included.
    s = await _status(system, c["id"], quote("order/42 in flight", safe=""))
    assert s == {
        "channel_id": c["id"],
        "message_id": "order/42 in flight",
        "status": "accepted",
        "message": None,
        "reply": None,
        "attempts": [],
    }
    missing = await system.admin.get(f"/api/channels/{c['id']}/messages/never-sent")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "MESSAGE_NOT_FOUND"


async def test_failed_reply_is_retried_then_failed_then_resent(system: System) -> None:
    system.receiver.behaviour["/flaky"] = (500, 0.0)
    c = await system.create_channel("/flaky")
    sent = await system.send(c["id"], {"sender_id": "flaky-user", "text": "try hard"})
    message_id = sent.json()["message_id"]

    retrying = await _wait_status(system, c["id"], message_id, "retrying")
    reply_id = retrying["reply"]["message_id"]
    busy = await system.admin.post(f"/api/channels/{c['id']}/messages/{reply_id}/resend")
    assert busy.status_code == 409
    assert busy.json()["error"]["code"] == "DELIVERY_IN_PROGRESS"

    failed = await _wait_status(system, c["id"], message_id, "failed")
    assert failed["reply"]["delivery"]["attempts"] == 4
    assert failed["reply"]["delivery"]["last_error_code"] == "HTTP_500"

    async def four_logged() -> bool:
        return len((await _status(system, c["id"], message_id))["attempts"]) == 4

    await eventually(four_logged)
    attempts = (await _status(system, c["id"], message_id))["attempts"]
    assert [a["attempt"] for a in attempts] == [1, 2, 3, 4]
    assert {a["error_code"] for a in attempts} == {"HTTP_500"}

    system.receiver.behaviour["/flaky"] = (200, 0.0)
    resp = await system.admin.post(f"/api/channels/{c['id']}/messages/{reply_id}/resend")
    assert resp.status_code == 202, resp.text
    assert resp.json()["status"] == "replied"
    assert resp.json()["reply"]["delivery"]["status"] == "pending"

    delivered = await _wait_status(system, c["id"], message_id, "delivered")
    assert delivered["reply"]["delivery"]["attempts"] == 1
    received = system.receiver.on_path("/flaky")
    assert len(received) == 5
    assert {r.json()["message_id"] for r in received} == {reply_id}
    assert received[-1].headers["X-HAPP-Attempt"] == "1"

    again = await system.admin.post(f"/api/channels/{c['id']}/messages/{reply_id}/resend")
    assert again.status_code == 202
    await system.receiver.wait_for("/flaky", 6)


async def test_a_resent_reply_gets_its_own_retries(system: System) -> None:
    # The resend's series counts its attempts from one again: its first retry
    # must not be taken for one of the four the failed series already made.
    system.receiver.behaviour["/resend-retry"] = (500, 0.0)
    c = await system.create_channel("/resend-retry")
    sent = await system.send(c["id"], {"sender_id": "rr", "text": "fail, then resend"})
    message_id = sent.json()["message_id"]
    failed = await _wait_status(system, c["id"], message_id, "failed")
    reply_id = failed["reply"]["message_id"]
    assert failed["reply"]["delivery"]["attempts"] == 4

    seen = len(system.receiver.on_path("/resend-retry"))
    system.receiver.decide["/resend-retry"] = lambda _: (
        (503, 0.0) if len(system.receiver.on_path("/resend-retry")) <= seen + 1 else (200, 0.0)
    )
    resp = await system.admin.post(f"/api/channels/{c['id']}/messages/{reply_id}/resend")
    assert resp.status_code == 202, resp.text

    delivered = await _wait_status(system, c["id"], message_id, "delivered")
    assert delivered["reply"]["delivery"]["attempts"] == 2
    series = system.receiver.on_path("/resend-retry")[seen:]
    assert [r.headers["X-HAPP-Attempt"] for r in series] == ["1", "2"]


async def test_reply_to_a_disconnected_channel_is_canceled_and_resendable(system: System) -> None:
    system.receiver.behaviour["/cancel"] = (502, 0.0)
    c = await system.create_channel("/cancel")
    sent = await system.send(c["id"], {"sender_id": "cx", "text": "will be canceled"})
    message_id = sent.json()["message_id"]
    await _wait_status(system, c["id"], message_id, "retrying")
    await system.admin.post(f"/api/channels/{c['id']}/disconnect")
    canceled = await _wait_status(system, c["id"], message_id, "canceled")
    reply_id = canceled["reply"]["message_id"]

    refused = await system.admin.post(f"/api/channels/{c['id']}/messages/{reply_id}/resend")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "CHANNEL_DISCONNECTED"

    system.receiver.behaviour["/cancel"] = (200, 0.0)
    await system.admin.post(f"/api/channels/{c['id']}/connect")
    # The incoming message's id is accepted too: it resends that message's reply.
    resp = await system.admin.post(f"/api/channels/{c['id']}/messages/{message_id}/resend")
    assert resp.status_code == 202, resp.text
    await _wait_status(system, c["id"], message_id, "delivered")

    unknown = await system.admin.post(f"/api/channels/{c['id']}/messages/rpl_nope/resend")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "MESSAGE_NOT_FOUND"


# --- conversations ---------------------------------------------------------------------------


async def test_conversations_list_and_messages(system: System) -> None:
    c = await system.create_channel("/convs")
    odd_sender = "team/support #1"
    for sender, text in [("alice", "first"), (odd_sender, "second"), ("alice", "third")]:
        resp = await system.send(
            c["id"],
            {
                "sender_id": sender,
                "sender_name": sender.title(),
                "text": text,
                "metadata": {"n": text},
                "attachments": [
                    {"type": "image", "url": "https://example.com/a.png", "name": "a.png"}
                ],
            },
        )
        assert resp.status_code == 200
        await system.receiver.wait_for("/convs", ["first", "second", "third"].index(text) + 1)

    async def replies_delivered() -> bool:
        page = (
            await system.admin.get(f"/api/channels/{c['id']}/conversations/alice/messages")
        ).json()
        replies = [m for m in page["items"] if m["role"] == "assistant"]
        return len(replies) == 2 and all(m["delivery"]["status"] == "delivered" for m in replies)

    await eventually(replies_delivered)

    convs = (await system.admin.get(f"/api/channels/{c['id']}/conversations")).json()
    assert [x["sender_id"] for x in convs["items"]] == ["alice", odd_sender]
    assert convs["next_cursor"] is None
    alice = convs["items"][0]
    assert alice["sender_name"] == "Alice"
    assert alice["message_count"] == 4
    assert alice["last_text"] == "Echo: third"
    assert alice["first_message_at"] <= alice["last_message_at"]

    first = (await system.admin.get(f"/api/channels/{c['id']}/conversations?limit=1")).json()
    assert [x["sender_id"] for x in first["items"]] == ["alice"]
    second = (
        await system.admin.get(
            f"/api/channels/{c['id']}/conversations",
            params={"limit": 1, "cursor": first["next_cursor"]},
        )
    ).json()
    assert [x["sender_id"] for x in second["items"]] == [odd_sender]
    assert second["next_cursor"] is None

    page = (await system.admin.get(f"/api/channels/{c['id']}/conversations/alice/messages")).json()
    items = page["items"]
    assert [(m["role"], m["text"]) for m in items] == [
        ("assistant", "Echo: third"),
        ("user", "third"),
        ("assistant", "Echo: first"),
        ("user", "first"),
    ]
    user = items[1]
    assert user["attachments"] == [
        {"type": "image", "url": "https://example.com/a.png", "name": "a.png", "mime_type": None}
    ]
    assert user["metadata"] == {"n": "third"}
    assert user["delivery"] is None
    assert user["reply_id"] == items[0]["message_id"]
    reply = items[0]
    assert reply["in_reply_to"] == user["message_id"]
    assert reply["metadata"] == {"n": "third"}
    assert reply["delivery"]["status"] == "delivered"
    assert reply["llm"]["fallback"] is False

    paged: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        p = (
            await system.admin.get(
                f"/api/channels/{c['id']}/conversations/alice/messages", params=params
            )
        ).json()
        paged += [m["message_id"] for m in p["items"]]
        cursor = p["next_cursor"]
        if not cursor:
            break
    assert paged == [m["message_id"] for m in items]

    odd = await system.admin.get(
        f"/api/channels/{c['id']}/conversations/{quote(odd_sender, safe='')}/messages"
    )
    assert odd.status_code == 200, odd.text
    assert [m["text"] for m in odd.json()["items"]] == ["Echo: second", "second"]

    unknown = await system.admin.get(f"/api/channels/{c['id']}/conversations/nobody/messages")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "CONVERSATION_NOT_FOUND"
    # Any character routes to the conversation, a newline too (found by schemathesis):
    # the documented 404, never a bare route-level one.
    for sender in ("line\nbreak", "a/b\n/c"):
        for suffix in ("/messages", "/read"):
            odd_path = f"/api/channels/{c['id']}/conversations/{quote(sender, safe='')}{suffix}"
            resp = await (
                system.admin.get(odd_path) if suffix == "/messages" else system.admin.post(odd_path)
            )
            assert resp.status_code == 404, (sender, suffix, resp.text)
            assert resp.json()["error"]["code"] == "CONVERSATION_NOT_FOUND", (sender, suffix)
    bad_cursor = await system.admin.get(
        f"/api/channels/{c['id']}/conversations", params={"cursor": "%%%"}
    )
    assert bad_cursor.status_code == 422


async def test_a_resend_whose_claimer_died_before_queuing_it_is_taken_again(
    system: System,
) -> None:
    # A resend claims the reply, then publishes it. Should the admin die in
    # between, the claim says 'pending' with nothing on its way: once it is old
    # enough to be taken for stranded, a resend takes it again, exactly once.
    c = await system.create_channel("/stranded")
    sent = await system.send(c["id"], {"sender_id": "st", "text": "lost resend"})
    message_id = sent.json()["message_id"]
    reply_id = (await _wait_status(system, c["id"], message_id, "delivered"))["reply"]["message_id"]
    states = DeliveryStates(system.db)

    claimed_at = datetime.now(UTC)
    fresh = await states.claim_for_resend(c["id"], reply_id, ("delivered",), claimed_at)
    assert fresh is not None
    busy = await system.admin.post(f"/api/channels/{c['id']}/messages/{reply_id}/resend")
    assert busy.status_code == 409
    assert busy.json()["error"]["code"] == "DELIVERY_IN_PROGRESS"
    await states.restore(c["id"], reply_id, fresh, claimed_at)

    long_ago = datetime.now(UTC) - timedelta(seconds=STRANDED_CLAIM_S + 1)
    assert await states.claim_for_resend(c["id"], reply_id, ("delivered",), long_ago)
    # Two takers of the stranded claim at once: one wins.
    retaken_at = datetime.now(UTC)
    taken = await asyncio.gather(
        *(states.claim_for_resend(c["id"], reply_id, (), retaken_at) for _ in range(2))
    )
    assert sum(t is not None for t in taken) == 1
    (winner,) = [t for t in taken if t is not None]
    # The first claimer's undo, late, leaves the claim taken since alone.
    await states.restore(c["id"], reply_id, winner, long_ago)
    still = await states.get(c["id"], reply_id)
    assert still is not None and still.status == "pending"
    assert still.resend_requested_at == retaken_at.replace(
        microsecond=retaken_at.microsecond // 1000 * 1000
    )
    await states.restore(c["id"], reply_id, winner, retaken_at)

    resp = await system.admin.post(f"/api/channels/{c['id']}/messages/{reply_id}/resend")
    assert resp.status_code == 202, resp.text
    got = await system.receiver.wait_for("/stranded", 2)
    assert [g.headers["X-HAPP-Delivery-Id"] for g in got] == [reply_id, reply_id]
    assert got[-1].headers["X-HAPP-Attempt"] == "1"
    delivered = await _wait_status(system, c["id"], message_id, "delivered")
    assert delivered["reply"]["delivery"]["attempts"] == 1
