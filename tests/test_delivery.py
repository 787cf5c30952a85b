"""Delivery against the real broker, database and a real TLS receiver: retry
timing, failure codes, order within a conversation while others flow, isolation
from a slow endpoint, cancellation, resend and signatures."""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import UTC, datetime
from typing import Any

from standardwebhooks.webhooks import Webhook

from happ_common.deliveries import DeliveryStates
from happ_common.events import OutboundReply
from happ_common.ids import conversation_key
from happ_common.kafka import DirectPublisher
from happ_common.settings import InfraSettings
from happ_common.signing import happ_signature
from happ_common.topics import OUTBOUND_REPLIES
from happ_devtools.receiver import Received
from tests.conftest import System, eventually

RETRY_DELAYS = (1.0, 2.0, 3.0)  # HAPP_DELIVERY_RETRY_DELAYS in conftest
TIMEOUT_S = 2.0  # HAPP_DELIVERY_TIMEOUT_S in conftest


async def _reply_doc(system: System, channel_id: str, in_reply_to: str) -> dict[str, Any] | None:
    """The reply to ``in_reply_to`` with its delivery (``status``, ``attempts``,
    ``last_error_code``), as the admin API shows it."""
    resp = await system.admin.get(f"/api/channels/{channel_id}/messages/{in_reply_to}")
    if resp.status_code == 404:  # the assistant has not stored the message yet
        return None
    assert resp.status_code == 200, resp.text
    reply: dict[str, Any] | None = resp.json()["reply"]
    if reply is None:
        return None
    return {**reply, **reply["delivery"]}


async def _wait_status(
    system: System, channel_id: str, message_id: str, status: str, timeout_s: float = 30
) -> dict[str, Any]:
    found: dict[str, Any] = {}

    async def reached() -> bool:
        doc = await _reply_doc(system, channel_id, message_id)
        if doc and doc.get("status") == status:
            found.update(doc)
            return True
        return False

    await eventually(reached, timeout_s=timeout_s)
    return found


async def test_retries_follow_the_schedule_then_the_reply_is_failed(system: System) -> None:
    system.receiver.behaviour["/always-500"] = (500, 0.0)
    channel = await system.create_channel("/always-500")
    sent = await system.send(channel["id"], {"sender_id": "u", "text": "retry me"})
    attempts = await system.receiver.wait_for("/always-500", 4, timeout_s=40)

    assert [a.headers["X-HAPP-Attempt"] for a in attempts] == ["1", "2", "3", "4"]
    assert len({a.headers["X-HAPP-Delivery-Id"] for a in attempts}) == 1
    gaps = [b.at - a.at for a, b in itertools.pairwise(attempts)]
    for gap, delay in zip(gaps, RETRY_DELAYS, strict=True):
        assert delay - 0.05 <= gap <= delay + 1.5, (gaps, RETRY_DELAYS)
    # Each attempt is signed for its own timestamp.
    for a in attempts:
        assert a.headers["X-HAPP-Signature"] == happ_signature(channel["hmac_secret"], a.body)

    doc = await _wait_status(system, channel["id"], sent.json()["message_id"], "failed")
    assert doc["attempts"] == 4 and doc["last_error_code"] == "HTTP_500"

    entries: list[dict[str, Any]] = []

    async def logged() -> bool:
        entries[:] = await system.log(channel["id"], direction="outgoing")
        return len(entries) == 4

    await eventually(logged, timeout_s=5)
    entries.sort(key=lambda e: e["attempt"])
    assert [e["attempt"] for e in entries] == [1, 2, 3, 4]
    assert {e["error_code"] for e in entries} == {"HTTP_500"}
    assert {e["status_code"] for e in entries} == {500}
    assert all(e["message_id"] == doc["message_id"] for e in entries)
    assert all(e["url"] == channel["outgoing_url"] for e in entries)


async def _first_attempt_code(system: System, channel: dict[str, Any], text: str) -> str:
    await system.send(channel["id"], {"sender_id": "codes", "text": text})
    code: list[str] = []

    async def logged() -> bool:
        entries = await system.log(channel["id"], direction="outgoing")
        code[:] = [e["error_code"] for e in entries if e["attempt"] == 1]
        return bool(code)

    await eventually(logged, timeout_s=20)
    await system.admin.post(f"/api/channels/{channel['id']}/disconnect")  # stop its retries
    return code[0]


async def test_each_failure_has_its_code(system: System, tls_other_ca: str) -> None:
    system.receiver.behaviour["/code-404"] = (404, 0.0)
    system.receiver.behaviour["/code-302"] = (302, 0.0)
    system.receiver.behaviour["/code-slow"] = (200, TIMEOUT_S + 2)
    cases = {
        "HTTP_404": system.endpoint("/code-404"),
        "REDIRECT_NOT_FOLLOWED": system.endpoint("/code-302"),
        "TIMEOUT": system.endpoint("/code-slow"),
        "ENDPOINT_UNREACHABLE": "https://127.0.0.1:1/closed",
        "TLS_ERROR": tls_other_ca,
    }
    channels = {
        code: (
            await system.admin.post("/api/channels", json={"name": code, "outgoing_url": url})
        ).json()
        for code, url in cases.items()
    }
    results = await asyncio.gather(
        *(_first_attempt_code(system, ch, code) for code, ch in channels.items())
    )
    assert dict(zip(channels, results, strict=True)) == {code: code for code in cases}


async def test_order_within_a_conversation_while_another_flows(system: System) -> None:
    failed_once: set[str] = set()

    def first_fails(got: Received) -> tuple[int, float]:
        body = got.json()
        if body["to"] == "slowpoke" and body["text"] == "Echo: one" and "one" not in failed_once:
            failed_once.add("one")
            return (503, 0.0)
        return (200, 0.0)

    system.receiver.decide["/order"] = first_fails
    channel = await system.create_channel("/order")
    for text in ("one", "two", "three"):
        assert (
            await system.send(channel["id"], {"sender_id": "slowpoke", "text": text})
        ).status_code == 200
    await system.receiver.wait_for("/order", 1)
    assert (
        await system.send(channel["id"], {"sender_id": "other", "text": "meanwhile"})
    ).status_code == 200

    got = await system.receiver.wait_for("/order", 5, timeout_s=30)
    slow = [
        (g.json()["text"], g.headers["X-HAPP-Attempt"], g.at)
        for g in got
        if g.json()["to"] == "slowpoke"
    ]
    other = [g.at for g in got if g.json()["to"] == "other"]
    assert [(t, a) for t, a, _ in slow] == [
        ("Echo: one", "1"),
        ("Echo: one", "2"),
        ("Echo: two", "1"),
        ("Echo: three", "1"),
    ]
    # The other conversation was not held behind slowpoke's retry.
    assert other[0] < slow[1][2]


async def test_a_timing_out_endpoint_does_not_slow_a_healthy_channel(system: System) -> None:
    system.receiver.behaviour["/hanging"] = (200, TIMEOUT_S * 3)
    slow = await system.create_channel("/hanging")
    fast = await system.create_channel("/healthy")
    for i in range(12):
        await system.send(slow["id"], {"sender_id": f"s{i}", "text": "slow"})
    await system.receiver.wait_for("/hanging", 12, timeout_s=30)
    started = time.time()
    for i in range(12):
        await system.send(fast["id"], {"sender_id": f"f{i}", "text": "fast"})
    healthy = await system.receiver.wait_for("/healthy", 12, timeout_s=30)
    # Every healthy reply arrived while the hanging endpoint was still holding
    # its requests open (they time out only after TIMEOUT_S).
    first_hang = min(g.at for g in system.receiver.on_path("/hanging"))
    assert max(g.at for g in healthy) < max(first_hang + TIMEOUT_S, started + TIMEOUT_S)
    await system.admin.post(f"/api/channels/{slow['id']}/disconnect")


async def test_disconnecting_cancels_pending_retries(system: System) -> None:
    system.receiver.behaviour["/dlv-cancel"] = (500, 0.0)
    channel = await system.create_channel("/dlv-cancel")
    sent = await system.send(channel["id"], {"sender_id": "u", "text": "to cancel"})
    await system.receiver.wait_for("/dlv-cancel", 1)
    await system.admin.post(f"/api/channels/{channel['id']}/disconnect")
    before = len(system.receiver.on_path("/dlv-cancel"))
    await _wait_status(system, channel["id"], sent.json()["message_id"], "canceled", timeout_s=20)
    await asyncio.sleep(RETRY_DELAYS[-1] + 1)
    # A retry already due may have read the channel just before the disconnect
    # (services see changes within HAPP_CHANNEL_CACHE_TTL_S); nothing after that.
    assert len(system.receiver.on_path("/dlv-cancel")) <= before + 1


async def test_resend_delivers_a_failed_reply_again_with_the_same_id(system: System) -> None:
    attempts_seen: list[str] = []

    def fail_first_series(got: Received) -> tuple[int, float]:
        attempts_seen.append(got.headers["X-HAPP-Attempt"])
        return (500, 0.0) if len(attempts_seen) <= 4 else (200, 0.0)

    system.receiver.decide["/resend"] = fail_first_series
    channel = await system.create_channel("/resend")
    sent = await system.send(channel["id"], {"sender_id": "u", "text": "again"})
    doc = await _wait_status(
        system, channel["id"], sent.json()["message_id"], "failed", timeout_s=40
    )

    # The admin's half of a resend: claim the ended series, then queue the reply.
    claimed = await DeliveryStates(system.db).claim_for_resend(
        channel["id"], doc["message_id"], ("failed",), datetime.now(UTC)
    )
    assert claimed is not None
    publisher = DirectPublisher(
        InfraSettings(kafka_bootstrap_servers=system.stack.kafka_bootstrap), client_id="test"
    )
    await publisher.start()
    try:
        await publisher.publish(
            OUTBOUND_REPLIES,
            OutboundReply(
                channel_id=channel["id"],
                reply_id=doc["message_id"],
                in_reply_to=sent.json()["message_id"],
                to="u",
                text=doc["text"],
                metadata=None,
                created_at=datetime.now(UTC),
                resend=True,
            ),
            key=conversation_key(channel["id"], "u"),
        )
    finally:
        await publisher.stop()
    got = await system.receiver.wait_for("/resend", 5, timeout_s=20)
    assert got[-1].headers["X-HAPP-Delivery-Id"] == doc["message_id"]
    assert got[-1].headers["X-HAPP-Attempt"] == "1"
    await _wait_status(system, channel["id"], sent.json()["message_id"], "delivered")


async def test_during_a_rotation_both_secrets_verify_the_outgoing_request(system: System) -> None:
    channel = await system.create_channel("/rotated-out")
    old = channel["hmac_secret"]
    new = (await system.admin.post(f"/api/channels/{channel['id']}/rotate-secret")).json()[
        "hmac_secret"
    ]
    await asyncio.sleep(1.2)  # the delivery service's channel cache refreshes
    await system.send(channel["id"], {"sender_id": "u", "text": "rotated"})
    (got,) = await system.receiver.wait_for("/rotated-out", 1)
    Webhook(new).verify(got.body, got.headers)
    Webhook(old).verify(got.body, got.headers)
    assert got.headers["X-HAPP-Signature"] == happ_signature(new, got.body)


async def test_a_resend_queued_twice_is_sent_once(system: System) -> None:
    # A stranded claim taken again queues the resend a second time, while the
    # first event may be on the log after all: the second must find the series
    # begun and send nothing (happ_common.deliveries.DeliveryState.stranded).
    channel = await system.create_channel("/resend-twice")
    sent = await system.send(channel["id"], {"sender_id": "u2", "text": "twice"})
    doc = await _wait_status(system, channel["id"], sent.json()["message_id"], "delivered")
    claimed = await DeliveryStates(system.db).claim_for_resend(
        channel["id"], doc["message_id"], ("delivered",), datetime.now(UTC)
    )
    assert claimed is not None
    event = OutboundReply(
        channel_id=channel["id"],
        reply_id=doc["message_id"],
        in_reply_to=sent.json()["message_id"],
        to="u2",
        text=doc["text"],
        metadata=None,
        created_at=datetime.now(UTC),
        resend=True,
    )
    publisher = DirectPublisher(
        InfraSettings(kafka_bootstrap_servers=system.stack.kafka_bootstrap), client_id="test"
    )
    await publisher.start()
    try:
        for _ in range(2):
            await publisher.publish(
                OUTBOUND_REPLIES, event, key=conversation_key(channel["id"], "u2")
            )
    finally:
        await publisher.stop()
    await system.receiver.wait_for("/resend-twice", 2, timeout_s=20)
    await _wait_status(system, channel["id"], sent.json()["message_id"], "delivered")
    # A later message of the conversation is delivered after both events were read.
    await system.send(channel["id"], {"sender_id": "u2", "text": "after"})
    await system.receiver.wait_for("/resend-twice", 3, timeout_s=20)
    got = system.receiver.on_path("/resend-twice")
    assert [g.json()["text"] for g in got] == ["Echo: twice", "Echo: twice", "Echo: after"]
    assert [g.headers["X-HAPP-Delivery-Id"] for g in got[:2]] == [doc["message_id"]] * 2
    assert [g.headers["X-HAPP-Attempt"] for g in got] == ["1", "1", "1"]
