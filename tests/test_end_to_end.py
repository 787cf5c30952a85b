"""A message travels from the webhook to a signed HTTPS reply, across real processes,
a real broker, a real database and real TLS."""

from __future__ import annotations

import json
from importlib.metadata import version

from standardwebhooks.webhooks import Webhook

from happ_common.signing import happ_signature
from tests.conftest import System, eventually


async def test_message_reaches_the_endpoint_as_a_signed_reply_with_history(system: System) -> None:
    channel = await system.create_channel(
        "/e2e", assistant={"system_prompt": "You are the E2E test bot.", "temperature": 0.2}
    )
    assert channel["status"] == "connected"
    assert channel["webhook_url"].endswith(f"/webhook/{channel['id']}")
    secret = channel["hmac_secret"]

    first = await system.send(
        channel["id"],
        {
            "sender_id": "user_42",
            "sender_name": "Dmytro",
            "text": "Hello!",
            "metadata": {"source": "website", "nested": {"n": [1, 2, 3]}},
            "unknown_field": "ignored",
        },
    )
    assert first.status_code == 200, first.text
    accepted = first.json()
    assert accepted["status"] == "accepted"
    assert accepted["channel_id"] == channel["id"]

    (got,) = await system.receiver.wait_for("/e2e", 1)
    body = got.json()
    assert body["to"] == body["sender_id"] == "user_42"
    assert body["text"] == body["reply"] == "Echo: Hello!"
    assert body["channel_id"] == channel["id"]
    assert body["channel"] == "custom_messenger"
    assert body["metadata"] == {"source": "website", "nested": {"n": [1, 2, 3]}}
    assert body["in_reply_to"] == accepted["message_id"]
    assert body["message_id"].startswith("rpl_")
    assert "test" not in body
    assert isinstance(body["timestamp"], int)

    # Both signature schemes, over the exact bytes received.
    assert got.headers["X-HAPP-Signature"] == happ_signature(secret, got.body)
    assert got.headers["X-HAPP-Delivery-Id"] == body["message_id"]
    assert got.headers["X-HAPP-Attempt"] == "1"
    assert got.headers["X-HAPP-Timestamp"] == str(body["timestamp"])
    Webhook(secret).verify(got.body, got.headers)

    # The second message of the conversation carries the first exchange as history.
    second = await system.send(channel["id"], {"sender_id": "user_42", "text": "And again?"})
    assert second.status_code == 200
    replies = await system.receiver.wait_for("/e2e", 2)
    assert replies[1].json()["text"] == "Echo: And again?"
    llm_request = next(
        r for r in system.llm.requests if r["messages"][-1]["content"] == "And again?"
    )
    assert llm_request["temperature"] == 0.2
    assert [(m["role"], m["content"]) for m in llm_request["messages"]] == [
        ("system", "You are the E2E test bot."),
        ("user", "Hello!"),
        ("assistant", "Echo: Hello!"),
        ("user", "And again?"),
    ]


async def test_conversations_do_not_mix_across_senders(system: System) -> None:
    channel = await system.create_channel("/mix")
    for sender in ("alice", "bob"):
        resp = await system.send(channel["id"], {"sender_id": sender, "text": f"I am {sender}"})
        assert resp.status_code == 200
    await system.receiver.wait_for("/mix", 2)
    resp = await system.send(channel["id"], {"sender_id": "bob", "text": "who am I?"})
    assert resp.status_code == 200
    await system.receiver.wait_for("/mix", 3)
    request = next(r for r in system.llm.requests if r["messages"][-1]["content"] == "who am I?")
    contents = json.dumps(request["messages"])
    assert "I am bob" in contents
    assert "I am alice" not in contents


async def test_every_service_answers_health_readiness_and_metrics(system: System) -> None:
    for service in ("ingress", "admin", "assistant", "delivery"):
        health = await system.http.get(system.url(service, "/healthz"))
        assert health.status_code == 200
        ready = await system.http.get(system.url(service, "/readyz"))
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"kafka": "ok", "mongodb": "ok"}
        metrics = await system.http.get(system.url(service, "/metrics"))
        assert metrics.status_code == 200
        # The running package's version, from its metadata, not a constant.
        running = version(f"happ-{service}")
        assert f'happ_service_info{{service="{service}",version="{running}"}} 1.0' in metrics.text


async def test_delivery_and_ingress_metrics_count_real_traffic(system: System) -> None:
    channel = await system.create_channel("/metrics")
    resp = await system.send(channel["id"], {"sender_id": "m", "text": "count me"})
    assert resp.status_code == 200
    await system.receiver.wait_for("/metrics", 1)

    async def delivered_counted() -> bool:
        text = (await system.http.get(system.url("delivery", "/metrics"))).text
        return 'happ_delivery_attempts_total{outcome="ok"}' in text

    await eventually(delivered_counted)
    ingress = (await system.http.get(system.url("ingress", "/metrics"))).text
    assert 'happ_ingress_requests_total{outcome="accepted"}' in ingress
