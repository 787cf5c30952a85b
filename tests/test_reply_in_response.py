"""The reply in the webhook's response (SPEC §3a): ``Prefer: wait`` and the
channel's ``delivery`` mode, against the session's real broker and database.

Each test has a channel with a model of its own on the fake LLM, so a slow
model (``ModelScript.delay_s``) makes a wait run out without slowing others.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
import uuid
from typing import Any

import httpx
import pytest

from happ_common.settings import InfraSettings
from happ_devtools.fake_llm import ModelScript
from happ_ingress.endpoints import preferred_wait
from happ_ingress.replies import ReplyStore, ReplyWaiters
from tests.conftest import System, eventually


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def channel(
    system: System, delivery: str, script: ModelScript | None = None
) -> tuple[dict[str, Any], str, str]:
    """A channel in ``delivery`` mode whose model is its own; its receiver path
    (every mode gets one, so a ``response`` channel is seen never to POST)."""
    model = unique("model")
    system.llm.models[model] = script or ModelScript()
    path = "/" + unique("wait")
    created = await system.create_channel(path, delivery=delivery, assistant={"model": model})
    return created, model, path


async def send_waiting(
    system: System, channel_id: str, message_id: str, wait: str = "10", **body: Any
) -> httpx.Response:
    return await system.send(
        channel_id,
        {"sender_id": body.pop("sender_id", "user-1"), "text": "hi", "message_id": message_id}
        | body,
        headers={"Prefer": f"wait={wait}"},
        timeout=40,
    )


def signed_get_headers(secret: str, query: str, at: int | None = None) -> dict[str, str]:
    timestamp = str(at if at is not None else int(time.time()))
    mac = hmac.new(secret.encode(), f"{timestamp}.{query}".encode(), hashlib.sha256).hexdigest()
    return {"X-HAPP-Timestamp": timestamp, "X-HAPP-Signature": f"sha256={mac}"}


def test_prefer_wait_parsing() -> None:
    assert preferred_wait(b"wait=5") == 5
    assert preferred_wait(b"respond-async, wait=30") == 30
    assert preferred_wait(b"wait=1; foo") == 1
    assert preferred_wait(b'WAIT="12"') == 12
    # Not supported: ignored, as RFC 7240 says of preferences a server does not honour.
    for value in (b"wait=0", b"wait=31", b"wait=abc", b"wait=-1", b"wait=2.5", b"handling=lenient"):
        assert preferred_wait(value) is None, value
    assert preferred_wait(None) is None


async def test_response_mode_answers_with_the_reply_and_never_posts(system: System) -> None:
    created, model, path = await channel(system, "response")
    message_id = unique("msg")
    resp = await send_waiting(system, created["id"], message_id, metadata={"k": "v"})
    assert resp.status_code == 200, resp.text
    assert resp.headers["preference-applied"] == "wait=10"
    body = resp.json()
    assert body["status"] == "replied"
    assert body["message_id"] == message_id
    reply = body["reply"]
    assert reply["in_reply_to"] == message_id
    assert reply["text"] == reply["reply"] == "Echo: hi"
    assert reply["to"] == reply["sender_id"] == "user-1"
    assert reply["channel_id"] == created["id"]
    assert reply["metadata"] == {"k": "v"}
    assert reply["author"] == {"type": "assistant", "name": "Assistant"}
    assert reply["message_id"].startswith("rpl_")
    assert system.llm.models[model].calls == 1

    # The request log shows the reply left in the response.
    async def logged() -> bool:
        found = await system.log(created["id"], direction="incoming", message_id=message_id)
        entry = found[0] if found else None
        return (
            entry is not None
            and entry["status_code"] == 200
            and reply["message_id"] in (entry["response_body"] or "")
        )

    await eventually(logged)
    # Never POSTed: the delivery service skipped it, with nothing to retry.
    await asyncio.sleep(1.5)
    assert system.receiver.on_path(path) == []
    assert await system.db.deliveries.count_documents({"channel_id": created["id"]}) == 0


async def test_both_mode_answers_with_the_body_the_endpoint_gets(system: System) -> None:
    created, _, path = await channel(system, "both")
    message_id = unique("msg")
    resp = await send_waiting(system, created["id"], message_id)
    assert resp.status_code == 200, resp.text
    in_response = resp.json()["reply"]
    [posted] = await system.receiver.wait_for(path)
    delivered = posted.json()
    # The same body, but for the moment each was signed at.
    assert {k: v for k, v in in_response.items() if k != "timestamp"} == {
        k: v for k, v in delivered.items() if k != "timestamp"
    }
    assert list(in_response) == list(delivered)  # same fields, same order
    # The response carries no signature headers: the integrator's own request got it.
    assert "x-happ-signature" not in resp.headers


async def test_endpoint_mode_ignores_the_preference(system: System) -> None:
    created, _, path = await channel(system, "endpoint")
    resp = await send_waiting(system, created["id"], unique("msg"))
    assert resp.status_code == 200
    assert resp.json()["status"] == "accepted"
    assert "preference-applied" not in resp.headers
    await system.receiver.wait_for(path)


async def test_unsupported_wait_is_ignored(system: System) -> None:
    created, _, _ = await channel(system, "response")
    for wait in ("0", "31", "soon"):
        resp = await send_waiting(system, created["id"], unique("msg"), wait=wait)
        assert resp.status_code == 200, wait
        assert resp.json()["status"] == "accepted"
        assert "preference-applied" not in resp.headers


async def test_wait_runs_out_then_the_reply_is_delivered(system: System) -> None:
    created, _, path = await channel(system, "both", ModelScript(delay_s=3.0))
    message_id = unique("msg")
    started = time.monotonic()
    resp = await send_waiting(system, created["id"], message_id, wait="1")
    assert resp.status_code == 202, resp.text
    assert resp.json() == {"status": "accepted", "message_id": message_id}
    assert resp.headers["preference-applied"] == "wait=1"
    assert time.monotonic() - started < 2.9  # answered before the model did
    [posted] = await system.receiver.wait_for(path)
    assert posted.json()["in_reply_to"] == message_id


async def test_wait_runs_out_then_the_reply_is_fetched(system: System) -> None:
    created, _, path = await channel(system, "response", ModelScript(delay_s=3.0))
    secret = created["hmac_secret"]
    message_id = unique("msg")
    resp = await send_waiting(system, created["id"], message_id, wait="1")
    assert resp.status_code == 202, resp.text
    url = system.url("ingress", f"/webhook/{created['id']}/replies")
    query = f"after={message_id}"

    async def fetched() -> list[dict[str, Any]]:
        got = await system.http.get(f"{url}?{query}", headers=signed_get_headers(secret, query))
        assert got.status_code == 200, got.text
        items: list[dict[str, Any]] = got.json()["items"]
        return items

    async def arrived() -> bool:
        return len(await fetched()) == 1

    await eventually(arrived, timeout_s=30)
    [reply] = await fetched()
    assert reply["in_reply_to"] == message_id
    assert reply["text"] == "Echo: hi"
    page = (
        await system.http.get(f"{url}?{query}", headers=signed_get_headers(secret, query))
    ).json()
    assert page["next_after"] == reply["message_id"]
    # Paging on: nothing after the last reply.
    query2 = f"after={reply['message_id']}"
    after = await system.http.get(f"{url}?{query2}", headers=signed_get_headers(secret, query2))
    assert after.json() == {"items": [], "next_after": reply["message_id"]}
    # A later wait for the same message is answered at once, from the database.
    again = await send_waiting(system, created["id"], message_id, wait="5")
    assert again.status_code == 200
    assert again.json()["status"] == "replied"
    assert again.json()["reply"]["message_id"] == reply["message_id"]
    assert system.receiver.on_path(path) == []


async def test_replies_refused_without_a_valid_signature(system: System) -> None:
    created, _, _ = await channel(system, "response")
    secret = created["hmac_secret"]
    url = system.url("ingress", f"/webhook/{created['id']}/replies")
    query = "limit=5"
    unsigned = await system.http.get(f"{url}?{query}")
    assert unsigned.status_code == 401
    assert unsigned.json()["error"]["code"] == "HMAC_REQUIRED"
    wrong = signed_get_headers("whsec_not-the-secret", query)
    bad = await system.http.get(f"{url}?{query}", headers=wrong)
    assert bad.status_code == 401
    assert bad.json()["error"]["code"] == "HMAC_MISMATCH"
    # Signed for another query: the signature covers the query string.
    other = await system.http.get(f"{url}?limit=6", headers=signed_get_headers(secret, query))
    assert other.status_code == 401
    # A replayed request: right signature, timestamp too old.
    old = signed_get_headers(secret, query, int(time.time()) - 600)
    replayed = await system.http.get(f"{url}?{query}", headers=old)
    assert replayed.status_code == 401
    assert "X-HAPP-Timestamp" in replayed.json()["error"]["message"]
    good = await system.http.get(f"{url}?{query}", headers=signed_get_headers(secret, query))
    assert good.status_code == 200
    assert good.json() == {"items": [], "next_after": None}
    unknown = "after=no-such-message"
    missing = await system.http.get(f"{url}?{unknown}", headers=signed_get_headers(secret, unknown))
    assert missing.status_code == 404
    invalid = "limit=0"
    refused = await system.http.get(f"{url}?{invalid}", headers=signed_get_headers(secret, invalid))
    assert refused.status_code == 422
    assert refused.json()["error"]["details"][0]["field"] == "limit"
    post = await system.http.post(url)
    assert post.status_code == 405


@pytest.mark.parametrize("delivery", ["response", "both"])
async def test_same_message_id_while_waiting_is_one_message(system: System, delivery: str) -> None:
    created, model, path = await channel(system, delivery, ModelScript(delay_s=1.5))
    message_id = unique("msg")
    first = asyncio.create_task(send_waiting(system, created["id"], message_id))
    await asyncio.sleep(0.5)  # accepted, the model still answering
    second = await send_waiting(system, created["id"], message_id)
    first_resp = await first
    assert first_resp.status_code == second.status_code == 200
    assert first_resp.json()["status"] == second.json()["status"] == "replied"
    assert first_resp.json()["reply"]["message_id"] == second.json()["reply"]["message_id"]
    assert system.llm.models[model].calls == 1
    # What is stored, for the whole channel: one message, one reply.
    stored = await system.db.messages.find({"channel_id": created["id"]}).to_list(None)
    assert sorted(m["role"] for m in stored) == ["assistant", "user"]
    if delivery == "both":
        await system.receiver.wait_for(path)
        await asyncio.sleep(1.0)
        assert len(system.receiver.on_path(path)) == 1


async def test_response_channel_needs_no_outgoing_url(system: System) -> None:
    resp = await system.admin.post("/api/channels", json={"name": "R", "delivery": "response"})
    assert resp.status_code == 201, resp.text
    assert resp.json()["delivery"] == "response"
    assert resp.json()["outgoing_url"] == ""
    switch = await system.admin.patch(
        f"/api/channels/{resp.json()['id']}", json={"delivery": "both"}
    )
    assert switch.status_code == 422
    assert switch.json()["error"]["details"][0]["field"] == "outgoing_url"
    refused = await system.admin.post("/api/channels", json={"name": "E"})
    assert refused.status_code == 422


async def test_openapi_documents_the_wait_and_the_replies(system: System) -> None:
    spec = (await system.http.get(system.url("ingress", "/openapi.json"))).json()
    post = spec["paths"]["/webhook/{channel_id}"]["post"]
    assert "Prefer" in {p["name"] for p in post["parameters"]}
    assert set(post["responses"]) >= {"200", "202"}
    assert "Replied" in spec["components"]["schemas"]
    get = spec["paths"]["/webhook/{channel_id}/replies"]["get"]
    names = {p["name"] for p in get["parameters"]}
    assert names == {"channel_id", "after", "limit", "X-HAPP-Timestamp", "X-HAPP-Signature"}
    assert set(get["responses"]) >= {"200", "401", "404"}


async def waiting_now(system: System) -> float:
    text = (await system.http.get(system.url("ingress", "/metrics"))).text
    line = next(x for x in text.splitlines() if x.startswith("happ_ingress_waiting_requests "))
    return float(line.split()[1])


async def test_a_client_that_leaves_stops_waiting(system: System) -> None:
    # Below the stack's 5 s LLM timeout: one call, answered after 3 s.
    created, _, _ = await channel(system, "response", ModelScript(delay_s=3.0))
    message_id = unique("msg")
    request = asyncio.create_task(send_waiting(system, created["id"], message_id, wait="30"))

    async def held() -> bool:
        return await waiting_now(system) >= 1

    await eventually(held, timeout_s=10)
    request.cancel()  # the connection closes: the ingress sees the disconnect

    async def released() -> bool:
        return await waiting_now(system) == 0

    await eventually(released, timeout_s=4)
    # Still accepted: its reply is kept for GET replies and a later wait.
    again = await send_waiting(system, created["id"], message_id, wait="15")
    assert again.json()["status"] == "replied", (again.status_code, again.headers, again.text)


async def test_waiters_beyond_the_bound_are_answered_at_once() -> None:
    class NoStore(ReplyStore):
        def __init__(self) -> None:
            pass

        async def reply_to(self, channel_id: str, message_id: str) -> None:
            return None

    async def never() -> None:
        await asyncio.Event().wait()

    waiters = ReplyWaiters(InfraSettings(), NoStore(), max_waiting=1)
    waiters.ready = True
    first = asyncio.create_task(waiters.wait("cm_x", "m1", b"cm_x\nu", 5, never))
    await asyncio.sleep(0.05)
    assert len(waiters) == 1
    started = time.monotonic()
    assert await waiters.wait("cm_x", "m2", b"cm_x\nu", 5, never) is None
    assert time.monotonic() - started < 1
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert len(waiters) == 0  # cleaned up on the way out, whatever ended the wait
