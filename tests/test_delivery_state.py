"""The delivery state store (happ_common.deliveries, happ_delivery.repository)
against the real database: first outcomes inserted, replays falling back to
updates, the pending-retry list and the resend claim."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from happ_common.deliveries import DeliveryStates, delivery_id
from happ_common.webhook_client import AttemptOutcome
from happ_delivery.repository import DeliveryRepository
from tests.conftest import System

OK = AttemptOutcome(True, 200, None, None, 3.0, "ok")
HTTP_500 = AttemptOutcome(False, 500, "HTTP_500", "boom", 4.0, "boom")


def _channel() -> str:
    return "cm_" + uuid.uuid4().hex[:12]


async def test_a_first_outcome_met_again_updates_the_state(system: System) -> None:
    repo, states = DeliveryRepository(system.db), DeliveryStates(system.db)
    channel = _channel()
    # One batch: two new replies, and one whose state exists already (a replay
    # after a crash): the insert's duplicate falls back to an update.
    await repo.record(channel, "rpl_old", "retrying", attempt=1, outcome=HTTP_500, first=True)
    await asyncio.gather(
        repo.record(channel, "rpl_a", "delivered", attempt=1, outcome=OK, first=True),
        repo.record(channel, "rpl_old", "delivered", attempt=1, outcome=OK, first=True),
        repo.record(channel, "rpl_b", "failed", attempt=1, outcome=HTTP_500, first=True),
    )
    found = await states.many([(channel, "rpl_a"), (channel, "rpl_old"), (channel, "rpl_b")])
    assert found[(channel, "rpl_a")].status == "delivered"
    assert found[(channel, "rpl_old")].status == "delivered"
    assert found[(channel, "rpl_old")].last_status_code == 200
    assert found[(channel, "rpl_b")].status == "failed"
    assert found[(channel, "rpl_b")].last_error_code == "HTTP_500"
    assert await repo.state(channel, "rpl_never") == await repo.state(channel, "rpl_never2")
    assert (await repo.state(channel, "rpl_never")).status == "pending"


async def test_a_retry_is_listed_for_its_partition_until_its_series_ends(system: System) -> None:
    repo = DeliveryRepository(system.db)
    channel = _channel()
    due = datetime.now(UTC) + timedelta(seconds=5)
    await repo.record(
        channel,
        "rpl_r",
        "retrying",
        attempt=1,
        outcome=HTTP_500,
        sender_id="alice",
        partition=7,
        next_attempt_at=due,
        first=True,
    )
    listed = [p for p in await repo.pending_retries({7}) if p.channel_id == channel]
    assert [(p.reply_id, p.sender_id, p.partition) for p in listed] == [("rpl_r", "alice", 7)]
    assert not [p for p in await repo.pending_retries({8}) if p.channel_id == channel]
    state = await repo.state(channel, "rpl_r")
    assert state.status == "retrying" and state.next_attempt_at is not None

    await repo.record(channel, "rpl_r", "delivered", attempt=2, outcome=OK)
    assert not [p for p in await repo.pending_retries({7}) if p.channel_id == channel]
    state = await repo.state(channel, "rpl_r")
    assert state.status == "delivered" and state.attempts == 2 and state.next_attempt_at is None


async def test_an_entry_left_by_a_crash_after_the_series_ended_holds_nothing_back(
    system: System,
) -> None:
    channel = _channel()
    await system.db.deliveries.insert_one(
        {"_id": delivery_id(channel, "rpl_done"), "status": "failed", "attempts": 4}
    )
    await system.db.pending_retries.insert_one(
        {
            "_id": delivery_id(channel, "rpl_done"),
            "channel_id": channel,
            "sender_id": "bob",
            "reply_id": "rpl_done",
            "partition": 9,
        }
    )
    states = DeliveryStates(system.db)
    assert not [p for p in await states.pending_retries({9}) if p.channel_id == channel]
    assert (
        await system.db.pending_retries.find_one({"_id": delivery_id(channel, "rpl_done")}) is None
    )


async def test_two_racing_resend_claims_start_one_series(system: System) -> None:
    repo, states = DeliveryRepository(system.db), DeliveryStates(system.db)
    channel = _channel()
    await repo.record(channel, "rpl_f", "failed", attempt=1, outcome=HTTP_500, first=True)
    now = datetime.now(UTC)
    claims = await asyncio.gather(
        *(states.claim_for_resend(channel, "rpl_f", ("failed", "delivered"), now) for _ in range(4))
    )
    assert sorted(claims, key=str) == [None, None, None, "failed"]
    assert (await repo.state(channel, "rpl_f")).status == "pending"
    # Not finished (pending) and never attempted: nothing to claim.
    assert await states.claim_for_resend(channel, "rpl_f", ("failed",), now) is None
    assert await states.claim_for_resend(channel, "rpl_none", ("failed",), now) is None
    await states.restore(channel, "rpl_f", "failed", now)
    assert (await repo.state(channel, "rpl_f")).status == "failed"
