"""SIGKILL the delivery service mid-stream: after a restart every reply arrives,
in order per conversation, and only attempts in flight at the kill repeat (with
the same X-HAPP-Delivery-Id). A conversation held by a pending retry stays held
across the restart."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

from happ_devtools.receiver import Received
from tests.conftest import System, eventually

CONVERSATIONS, PER_CONVERSATION = 6, 5


async def test_sigkill_mid_stream_loses_nothing_and_keeps_order(system: System) -> None:
    held_failures: list[Received] = []
    first_failure = asyncio.Event()

    def decide(got: Received) -> tuple[int, float]:
        body = got.json()
        if body["to"] == "held" and body["text"] == "Echo: A" and len(held_failures) < 2:
            held_failures.append(got)
            first_failure.set()
            return (503, 0.0)
        return (200, 0.3)  # slow enough to have work in flight at the kill

    system.receiver.decide["/kill"] = decide
    channel = await system.create_channel("/kill")
    for text in ("A", "B"):
        assert (
            await system.send(channel["id"], {"sender_id": "held", "text": text})
        ).status_code == 200
    await asyncio.wait_for(first_failure.wait(), 30)
    for n in range(PER_CONVERSATION):
        for c in range(CONVERSATIONS):
            resp = await system.send(channel["id"], {"sender_id": f"c{c}", "text": f"{n}"})
            assert resp.status_code == 200

    async def some_delivered() -> bool:
        return len([g for g in system.receiver.on_path("/kill") if g.json()["to"] != "held"]) >= 8

    await eventually(some_delivered, timeout_s=30)
    delivery = system.stack.services["delivery"]
    await asyncio.to_thread(delivery.kill)
    await asyncio.to_thread(system.stack.start_service, "delivery")
    await asyncio.to_thread(system.stack.wait_ready, "delivery", 60)

    expected = CONVERSATIONS * PER_CONVERSATION + 2

    async def all_arrived() -> bool:
        ok = [g for g in system.receiver.on_path("/kill") if g not in held_failures]
        return len({g.headers["X-HAPP-Delivery-Id"] for g in ok}) >= expected

    await eventually(all_arrived, timeout_s=120, interval_s=0.5)
    got = [g for g in system.receiver.on_path("/kill") if g not in held_failures]

    async def replies() -> list[dict[str, Any]]:
        senders = ["held", *(f"c{c}" for c in range(CONVERSATIONS))]
        listed = [m for s in senders for m in await system.messages(channel["id"], s)]
        return [m for m in listed if m["role"] == "assistant"]

    stored = await replies()
    assert {g.headers["X-HAPP-Delivery-Id"] for g in got} == {r["message_id"] for r in stored}
    assert len(stored) == expected

    # Order: within each conversation, first arrivals follow the messages' order.
    first_seen: dict[str, list[str]] = defaultdict(list)
    for g in got:
        body = g.json()
        if body["text"] not in first_seen[body["to"]]:
            first_seen[body["to"]].append(body["text"])
    for c in range(CONVERSATIONS):
        assert first_seen[f"c{c}"] == [f"Echo: {n}" for n in range(PER_CONVERSATION)]
    assert first_seen["held"] == ["Echo: A", "Echo: B"]
    # B went out only after A finally succeeded.
    a_ok = min(g.at for g in got if g.json()["to"] == "held" and g.json()["text"] == "Echo: A")
    b_first = min(g.at for g in got if g.json()["to"] == "held" and g.json()["text"] == "Echo: B")
    assert b_first > a_ok

    # Repeats are only what was in flight at the kill: at most one per conversation.
    per_id: dict[str, int] = defaultdict(int)
    for g in got:
        per_id[g.headers["X-HAPP-Delivery-Id"]] += 1
    repeats = sum(n - 1 for n in per_id.values())
    assert repeats <= CONVERSATIONS + 1, per_id

    async def all_delivered() -> bool:
        return [r["delivery"]["status"] for r in await replies()] == ["delivered"] * expected

    await eventually(all_delivered, timeout_s=10)
