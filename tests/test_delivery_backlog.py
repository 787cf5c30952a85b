"""A channel whose endpoint takes replies slower than its sender sends messages:
its waiting replies are bounded per channel (the webhook answers 429 over its
share), every message accepted is still delivered once and in order, and other
channels are served meanwhile (happ_delivery.backlog)."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from datetime import UTC, datetime

import httpx

from happ_devtools.local_stack import wait_ready
from happ_devtools.procs import free_port
from tests.conftest import System, eventually
from tests.test_delivery_pace import _balanced, _metric

# Enough conversations that both delivery members get several of them.
SENDERS = 18
# Small enough that a few seconds over the cap fill a member's share.
SHARE_BYTES = 4 * 1024


async def test_a_channel_slower_out_than_in_is_refused_alone_and_loses_nothing(
    system: System,
) -> None:
    first_port = system.stack.config.ports["delivery"]
    second_port = free_port()
    second = system.stack.service_process(
        "delivery",
        "delivery-backlog",
        second_port,
        env={
            "HAPP_DELIVERY_MAX_PARKED_BYTES_PER_CHANNEL": str(SHARE_BYTES),
            "HAPP_DELIVERY_BACKLOG_LEASE_S": "2",
        },
    ).start()
    try:
        await asyncio.to_thread(wait_ready, second_port, second)
        await _balanced(system, [first_port, second_port])
        # The pace is split between the members by the partitions each holds: at
        # 20/s, a second member holding few of the 18 conversations once got
        # fewer messages than its 10/s and never backed up. At 5/s any two do.
        slow = await system.create_channel("/backlog-slow", outgoing_rate_per_second=5)
        calm = await system.create_channel("/backlog-calm")

        answers: list[httpx.Response] = []
        accepted: dict[str, list[str]] = defaultdict(list)
        calm_sent: dict[str, float] = {}
        # Rounds of one message per conversation (about 40 messages/s against
        # 5 replies/s out), until a few rounds after the first refusal.
        deadline = time.monotonic() + 20.0
        rounds_after_refusal = 0
        while rounds_after_refusal < 5 and time.monotonic() < deadline:
            senders = [f"s{i}" for i in range(SENDERS)]
            sent = await asyncio.gather(
                *(system.send(slow["id"], {"sender_id": s, "text": "hi"}) for s in senders)
            )
            for sender, resp in zip(senders, sent, strict=True):
                answers.append(resp)
                if resp.status_code == 200:
                    accepted[sender].append(resp.json()["message_id"])
            calm_resp = await system.send(calm["id"], {"sender_id": "c", "text": "still here?"})
            calm_sent[calm_resp.json()["message_id"]] = time.time()  # as Received.at
            if any(r.status_code == 429 for r in answers):
                rounds_after_refusal += 1
            await asyncio.sleep(0.3)

        refused = [r for r in answers if r.status_code == 429]
        assert refused, [r.status_code for r in answers]
        assert {r.status_code for r in answers} == {200, 429}
        for r in refused:
            assert r.json()["error"]["code"] == "RATE_LIMITED"
            assert "waiting for its endpoint" in r.json()["error"]["message"]
            assert int(r.headers["Retry-After"]) >= 1
        # The mark is on the channel for operators to see.
        marked = datetime.fromisoformat(
            (await system.admin.get(f"/api/channels/{slow['id']}")).json()[
                "replies_backlogged_until"
            ]
        )
        assert marked.tzinfo is not None and marked > datetime(2026, 1, 1, tzinfo=UTC)
        assert await _metric(system, second_port, "happ_delivery_channel_backlogs_total") >= 1
        ingress_port = system.stack.config.ports["ingress"]
        refusals = await _metric(system, ingress_port, "happ_ingress_backlog_refusals_total")
        assert refusals >= len(refused)

        # The calm channel was served while the slow one was refused.
        calm_posts = await system.receiver.wait_for("/backlog-calm", len(calm_sent), timeout_s=30)
        delays = [
            p.at - calm_sent[p.json()["in_reply_to"]]
            for p in calm_posts
            if p.json()["in_reply_to"] in calm_sent
        ]
        assert len(delays) == len(calm_sent)
        # Not a latency goal: "not held behind the slow channel's backlog",
        # which would take its whole drain (seconds per reply queued).
        assert max(delays) < 3.0, delays

        # Every accepted message is answered once, in its conversation's order.
        total = sum(len(ids) for ids in accepted.values())
        posts = await system.receiver.wait_for("/backlog-slow", total, timeout_s=90)
        await asyncio.sleep(1.0)  # nothing more comes
        posts = system.receiver.on_path("/backlog-slow")
        answered = [p.json()["in_reply_to"] for p in posts if p.status == 200]
        assert sorted(answered) == sorted(m for ids in accepted.values() for m in ids)
        for sender, ids in accepted.items():
            mine = [p.json()["in_reply_to"] for p in posts if p.json()["to"] == sender]
            assert mine == ids, sender

        # Drained: the webhook takes the channel's messages again.
        async def accepts_again() -> bool:
            resp = await system.send(slow["id"], {"sender_id": "late", "text": "again"})
            return resp.status_code == 200

        await eventually(accepts_again, timeout_s=30, interval_s=0.5)
    finally:
        second.stop()
        await _balanced(system, [first_port])
