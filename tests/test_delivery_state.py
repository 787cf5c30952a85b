"""The delivery state store (happ_common.deliveries, happ_delivery.repository)
against the real database: first outcomes inserted, replays falling back to
updates, the pending-retry list, the resend claim, and the order of a reply's
outcomes when its retry is consumed before its "retrying" record is written."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel

from happ_common.channels import ChannelCache, ChannelRepository
from happ_common.deliveries import DeliveryStates, delivery_id
from happ_common.events import DeliveryRetry, OutboundReply
from happ_common.mongo import ensure_indexes
from happ_common.request_log import RequestLogWriter
from happ_common.settings import HappSettings
from happ_common.webhook_client import AttemptOutcome, new_session
from happ_delivery.repository import DeliveryRepository
from happ_delivery.service import DeliveryService
from happ_delivery.settings import DeliverySettings
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
    won = [c for c in claims if c is not None]
    assert len(won) == 1 and won[0].status == "failed" and won[0].attempts == 1
    # The new series counts from zero, so its retries are not taken for done ones.
    claimed = await repo.state(channel, "rpl_f")
    assert claimed.status == "pending" and claimed.attempts == 0
    # Not finished (pending) and never attempted: nothing to claim.
    assert await states.claim_for_resend(channel, "rpl_f", ("failed",), now) is None
    assert await states.claim_for_resend(channel, "rpl_none", ("failed",), now) is None
    await states.restore(channel, "rpl_f", won[0], now)
    restored = await repo.state(channel, "rpl_f")
    assert restored.status == "failed" and restored.attempts == 1


async def test_the_old_retrying_index_on_messages_is_dropped(system: System) -> None:
    # A database from before the delivery state had its own collection.
    await system.db.messages.create_index(
        [("delivery_partition", 1)],
        name="retrying",
        partialFilterExpression={"status": "retrying"},
    )
    await ensure_indexes(system.db, HappSettings())
    assert "retrying" not in await system.db.messages.index_information()
    await ensure_indexes(system.db, HappSettings())  # and again: nothing to drop


class _SlowRetryingRecord(DeliveryRepository):
    """Writes "retrying" late, as a slow database batch would."""

    async def record(self, *args: Any, **kw: Any) -> None:
        if args[2] == "retrying":
            await asyncio.sleep(0.5)
        await super().record(*args, **kw)


class _DeliverRetryAtOnce:
    """A publisher whose retries are consumed the moment they are published."""

    def __init__(self) -> None:
        self.service: DeliveryService | None = None
        self.handled: list[asyncio.Task[None]] = []

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def ping(self) -> None: ...

    async def publish(self, topic: str, event: BaseModel, key: bytes) -> None:
        assert self.service is not None and isinstance(event, DeliveryRetry)
        self.handled.append(asyncio.create_task(self.service.deliver_retry(event, 0)))


async def test_a_retry_consumed_before_its_retrying_record_landed_waits_for_it(
    system: System,
) -> None:
    # Without the wait, attempt 2's "delivered" would land first and the late
    # "retrying" would overwrite it, leaving a delivered reply shown as retrying
    # and listed in pending_retries (its conversation held at the next takeover).
    path = "/retry-overtakes-record"
    system.receiver.decide[path] = lambda _: (
        (500, 0.0) if len(system.receiver.on_path(path)) == 1 else (200, 0.0)
    )
    channel = await system.create_channel(path)
    publisher = _DeliverRetryAtOnce()
    session = new_session(ca_file=str(system.tls.ca_file), allow_private=True)
    request_log = RequestLogWriter(system.db)
    try:
        service = DeliveryService(
            settings=DeliverySettings(retry_delays=[0.0, 0.0, 0.0], timeout_s=2.0),
            allow_private=True,
            channels=ChannelCache(ChannelRepository(system.db), 1.0),
            repository=_SlowRetryingRecord(system.db),
            session=session,
            publisher=publisher,
            request_log=request_log,
        )
        publisher.service = service
        reply = OutboundReply(
            channel_id=channel["id"],
            reply_id="rpl_" + uuid.uuid4().hex,
            in_reply_to="m1",
            to="overtaken",
            text="hello",
            metadata=None,
            created_at=datetime.now(UTC),
        )
        await service.deliver_new(reply, 0, may_be_replay=False)
        await asyncio.gather(*publisher.handled)
    finally:
        await session.close()
    state = await DeliveryRepository(system.db).state(channel["id"], reply.reply_id)
    assert (state.status, state.attempts) == ("delivered", 2)
    pending = await DeliveryStates(system.db).pending_retries({0})
    assert reply.reply_id not in {p.reply_id for p in pending}
    assert [r.headers["X-HAPP-Attempt"] for r in system.receiver.on_path(path)] == ["1", "2"]
