"""An endpoint's 429 or 503 with ``Retry-After``: honoured as a pause of its
channel, never as a spent attempt, and never a wait for another channel."""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from happ_common.deliveries import DeliveryStates
from happ_common.pipeline import Abandoned
from happ_common.webhook_client import retry_after_seconds
from happ_delivery.pace import ChannelPauses, RateCaps
from happ_delivery.slots import SendSlots, SlotWaitExpired
from happ_devtools.local_stack import wait_ready
from happ_devtools.procs import free_port
from happ_devtools.receiver import Answer, Received
from tests.conftest import System, eventually
from tests.test_delivery import _wait_status

MAX_PAUSES = 10  # HAPP_DELIVERY_MAX_PAUSES's default
COUNTED_ATTEMPTS = 4  # 1 + the three HAPP_DELIVERY_RETRY_DELAYS in conftest


def test_retry_after_is_read_as_seconds_or_an_http_date() -> None:
    now = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("120", now) == 120.0
    assert retry_after_seconds(" 0 ", now) == 0.0
    later = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert retry_after_seconds(later, now) == 90.0
    earlier = format_datetime(now - timedelta(minutes=5), usegmt=True)
    assert retry_after_seconds(earlier, now) == 0.0
    for invalid in (None, "", "soon", "-5", "1.5", "²", "Mon, 99 Foo 2026 99:99:99 GMT"):
        assert retry_after_seconds(invalid, now) is None, invalid
    # Absurd values never raise (the POST has been made; its outcome must be recorded).
    assert retry_after_seconds("9" * 4000, now) == math.inf
    assert retry_after_seconds("Mon, 01 Jan 99999 00:00:00 GMT", now) is None
    assert retry_after_seconds("Mon, 01 Jan 2026 99999999999999999999:00:00 GMT", now) is None


async def test_retry_after_pauses_the_channel_without_spending_attempts(system: System) -> None:
    """Five answers asking to wait, more than the four attempts a reply has:
    the reply is still delivered, each POST comes after the pause asked for,
    the channel's other conversation waits out the pause too, and another
    channel is served meanwhile."""
    asked = 0

    def busy_then_ok(got: Received) -> Answer:
        nonlocal asked
        if got.json().get("to") != "first" or asked >= 5:
            return (200, 0.0)
        asked += 1
        if asked == 3:  # an HTTP-date, from a 503
            until = datetime.now(UTC) + timedelta(seconds=2)
            return (503, 0.0, {"Retry-After": format_datetime(until, usegmt=True)})
        return (429, 0.0, {"Retry-After": "1"})

    system.receiver.decide["/pace-busy"] = busy_then_ok
    busy = await system.create_channel("/pace-busy")
    calm = await system.create_channel("/pace-calm")

    sent = await system.send(busy["id"], {"sender_id": "first", "text": "hello"})
    first = sent.json()["message_id"]
    await system.receiver.wait_for("/pace-busy", 1, timeout_s=30)
    # While the busy channel is paused: another of its conversations, and another channel.
    other = await system.send(busy["id"], {"sender_id": "second", "text": "me too"})
    await system.send(calm["id"], {"sender_id": "c", "text": "not paused"})

    posts = await system.receiver.wait_for("/pace-busy", 7, timeout_s=60)
    mine = [p for p in posts if p.json().get("in_reply_to") == first]
    assert [p.headers["X-HAPP-Attempt"] for p in mine] == ["1", "2", "3", "4", "5", "6"]
    assert [p.status for p in mine] == [429, 429, 503, 429, 429, 200]
    gaps = [b.at - a.at for a, b in itertools.pairwise(mine)]
    asked_for = [1.0, 1.0, 2.0, 1.0, 1.0]
    for gap, wait in zip(gaps, asked_for, strict=True):
        # The date's whole seconds make the 503's pause up to 1 s shorter.
        floor = wait - (1.0 if wait == 2.0 else 0.0) - 0.05
        assert floor <= gap <= wait + 3.0, (gaps, asked_for)
    assert len({p.headers["X-HAPP-Delivery-Id"] for p in mine}) == 1

    shown = await _wait_status(system, busy["id"], first, "delivered")
    # The pauses are the delivery service's own count: read from its state.
    state = await DeliveryStates(system.db).get(busy["id"], shown["message_id"])
    assert state is not None and state.attempts == 6 and state.pauses == 5

    # The other conversation's first POST waited for the pause in force when it
    # arrived: never in the middle of one. (It was sent after the first pause
    # began; at a later pause's start it may race the retry that meets the 429,
    # both woken by the end of the pause before: a moment is allowed there.)
    theirs = [p for p in posts if p.json().get("in_reply_to") == other.json()["message_id"]]
    assert theirs, "the busy channel's other conversation was never delivered"
    for i, (p, wait) in enumerate(zip(mine, asked_for, strict=False)):
        start = p.at + (0.0 if i == 0 else 0.3)
        assert not (start < theirs[0].at < p.at + wait - 0.05), (theirs[0].at, p.at, wait)

    # The calm channel was served while the busy one was still paused.
    calm_post = (await system.receiver.wait_for("/pace-calm", 1, timeout_s=30))[0]
    assert calm_post.at < mine[-1].at

    async def counted() -> bool:
        return len(await system.log(busy["id"], direction="outgoing", status="429")) >= 4

    await eventually(counted, timeout_s=10)  # each paused attempt is in the request log


async def test_pauses_are_bounded_then_answers_asking_to_wait_count_as_attempts(
    system: System,
) -> None:
    """An endpoint that asks to wait forever cannot hold a conversation forever:
    after ``max_pauses`` the answers count, and the reply ends ``failed``."""
    system.receiver.behaviour["/pace-forever"] = (429, 0.0, {"Retry-After": "0"})
    channel = await system.create_channel("/pace-forever")
    sent = await system.send(channel["id"], {"sender_id": "u", "text": "anyone?"})
    expected = MAX_PAUSES + COUNTED_ATTEMPTS
    posts = await system.receiver.wait_for("/pace-forever", expected, timeout_s=60)
    assert [p.headers["X-HAPP-Attempt"] for p in posts[:expected]] == [
        str(n) for n in range(1, expected + 1)
    ]
    # "Retry-After: 0" is still a pause of a second, not a free attempt at once.
    gaps = [b.at - a.at for a, b in itertools.pairwise(posts[: MAX_PAUSES + 1])]
    assert min(gaps) >= 0.95, gaps
    shown = await _wait_status(system, channel["id"], sent.json()["message_id"], "failed")
    state = await DeliveryStates(system.db).get(channel["id"], shown["message_id"])
    assert state is not None and state.attempts == expected and state.pauses == MAX_PAUSES
    assert state.last_error_code == "HTTP_429"
    assert len(system.receiver.on_path("/pace-forever")) == expected  # and no more


async def test_a_paused_sender_lets_go_at_once_when_its_partition_is_revoked() -> None:
    """A rebalance must not wait out one tenant's pause (every tenant's
    deliveries wait for the rebalance): the parked sender is abandoned, and the
    partition's next owner sends the reply."""
    pauses = ChannelPauses()
    pauses.pause("cm_busy", 60)
    revoked = asyncio.Event()
    waiting = asyncio.create_task(pauses.wait("cm_busy", revoked))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    await pauses.wait("cm_other", revoked)  # other channels never wait
    revoked.set()
    with pytest.raises(Abandoned):
        await asyncio.wait_for(waiting, 1.0)


async def _metric(system: System, port: int, name: str) -> float:
    resp = await system.http.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in resp.text.splitlines()
        if line.startswith((name + "{", name + " "))
    )


async def _balanced(system: System, ports: list[int]) -> None:
    """Until the delivery members on ``ports`` each hold some of the partitions of
    both its topics, and together all of them."""
    expected = system.stack.config.partitions * 2

    async def shared() -> bool:
        counts = [await _metric(system, p, "happ_pipeline_assigned_partitions") for p in ports]
        return sum(counts) == expected and all(counts)

    await eventually(shared, timeout_s=60)


async def test_the_outgoing_caps_hold_with_two_delivery_replicas(system: System) -> None:
    """A channel capped at 4 requests/s and 2 at once, its replies spread over
    two delivery members: the endpoint never sees more than the caps allow, and
    both members send."""
    first_port = system.stack.config.ports["delivery"]
    second_port = free_port()
    second = system.stack.service_process("delivery", "delivery-2", second_port).start()
    try:
        await asyncio.to_thread(wait_ready, second_port, second)
        await _balanced(system, [first_port, second_port])
        ok = 'happ_delivery_attempts_total{outcome="ok"}'
        before = [await _metric(system, p, ok) for p in (first_port, second_port)]
        system.receiver.behaviour["/pace-capped"] = (200, 0.4)
        channel = await system.create_channel(
            "/pace-capped", outgoing_rate_per_second=4, outgoing_max_concurrency=2
        )
        assert channel["outgoing_rate_per_second"] == 4
        assert channel["outgoing_max_concurrency"] == 2
        sent = await asyncio.gather(
            *(
                system.send(channel["id"], {"sender_id": f"cap-{n}", "text": "hi"})
                for n in range(24)
            )
        )
        assert all(r.status_code == 200 for r in sent)
        posts = await system.receiver.wait_for("/pace-capped", 24, timeout_s=60)
        after = [await _metric(system, p, ok) for p in (first_port, second_port)]
    finally:
        second.stop()
        await _balanced(system, [first_port])

    times = sorted(p.at for p in posts)
    # Each member spaces its sends at 2/s; arrival jitter may bring one more
    # into a second's window per member, never a burst.
    busiest = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
    assert busiest <= 4 + 2, times
    assert (len(times) - 1) / (times[-1] - times[0]) <= 4 * 1.15, times
    # Each request is answered after 0.4 s: how many were in flight at once.
    overlapping = max(sum(1 for t in times if t <= start < t + 0.4) for start in times)
    assert overlapping <= 2, times
    assert after[0] > before[0] and after[1] > before[1], (before, after)


async def test_a_revocation_drops_the_rate_reservations_of_abandoned_senders() -> None:
    """Senders abandoned at a rebalance must not push the records that come back
    further out: after ``forget`` the channel's next turn is now."""
    rates = RateCaps()
    never = asyncio.Event()
    await rates.take("cm_capped", 1.0, never)  # the first turn is free
    queued = [asyncio.create_task(rates.take("cm_capped", 1.0, never)) for _ in range(50)]
    await asyncio.sleep(0.05)
    assert not any(t.done() for t in queued)  # 50 turns reserved, a second apart
    for t in queued:
        t.cancel()
    await asyncio.gather(*queued, return_exceptions=True)
    rates.forget()
    assert rates.free_now("cm_capped", 1.0)
    assert not rates.free_now("cm_capped", 1.0)  # and the next turn is a second away


async def test_a_bounded_slot_wait_gives_up_without_holding_anything() -> None:
    """A typing event waits for a sending slot at most its timeout: the reply
    behind it waits for that slot too. Giving up leaves every limit as it was."""
    slots = SendSlots(per_channel=1, per_host=8, total=8)
    url = "https://example.test/hook"
    async with slots.hold("cm_busy", url):
        started = time.monotonic()
        with pytest.raises(SlotWaitExpired):
            async with slots.hold("cm_busy", url, max_wait_s=0.2):
                raise AssertionError("no slot was free")
        assert 0.15 <= time.monotonic() - started < 2.0
        # Another channel is not held by the busy one.
        async with slots.hold("cm_other", url, max_wait_s=0.2):
            pass
    # The busy channel's slot is free again and nothing leaked.
    async with slots.hold("cm_busy", url, max_wait_s=0.2):
        pass
    assert slots._channels._sems == {} and slots._hosts._sems == {}


async def test_a_new_url_applies_to_replies_already_waiting_for_their_turn(
    system: System,
) -> None:
    """Replies queued behind a 1/s cap when the channel's URL changes go to the
    new URL, none to the old one once the change is seen."""
    system.receiver.behaviour["/pace-old"] = (200, 0.0)
    system.receiver.behaviour["/pace-new"] = (200, 0.0)
    channel = await system.create_channel("/pace-old", outgoing_rate_per_second=1)
    for n in range(8):
        await system.send(channel["id"], {"sender_id": f"moved-{n}", "text": "hi"})
    await system.receiver.wait_for("/pace-old", 1, timeout_s=30)
    patched = await system.admin.patch(
        f"/api/channels/{channel['id']}", json={"outgoing_url": system.endpoint("/pace-new")}
    )
    assert patched.status_code == 200, patched.text
    changed_at = time.time()
    await system.receiver.wait_for("/pace-new", 1, timeout_s=30)
    old = system.receiver.on_path("/pace-old")
    new = await system.receiver.wait_for("/pace-new", 8 - len(old), timeout_s=30)
    assert len(old) + len(new) == 8
    # The channel cache lives a second (HAPP_CHANNEL_CACHE_TTL_S): nothing reaches
    # the old URL after that, and a moment for a POST already on its way.
    assert all(p.at < changed_at + 2.5 for p in old), [p.at - changed_at for p in old]
    assert len(new) >= 4, (len(old), len(new))
