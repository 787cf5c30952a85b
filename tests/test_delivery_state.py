"""A reply's delivery as a state machine (happ_delivery.service, .repository)
against the real database and TLS receiver, in-process so each failure can be
placed exactly: claims, duplicates, a crash mid-attempt, failures after the
POST, the pending-retry list and the resend claim."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from pydantic import BaseModel

from happ_common.channels import ChannelCache, ChannelRepository
from happ_common.deliveries import DeliveryState, DeliveryStates, delivery_id
from happ_common.endpoint_health import EndpointHealthRepository
from happ_common.events import DeliveryRetry, OutboundReply
from happ_common.kafka import PublishFailed
from happ_common.mongo import ensure_indexes
from happ_common.pipeline import Abandoned
from happ_common.request_log import RequestLogWriter
from happ_common.settings import HappSettings
from happ_common.webhook_client import AttemptOutcome, new_session
from happ_delivery.health import EndpointHealth
from happ_delivery.repository import DeliveryRepository
from happ_delivery.service import DeliveryService
from happ_delivery.settings import DeliverySettings
from tests.conftest import System

OK = AttemptOutcome(True, 200, None, None, 3.0, "ok")
HTTP_500 = AttemptOutcome(False, 500, "HTTP_500", "boom", 4.0, "boom")


def _channel() -> str:
    return "cm_" + uuid.uuid4().hex[:12]


async def _state(repo: DeliveryRepository, channel: str, reply: str) -> DeliveryState:
    state = await repo.state(channel, reply)
    assert state is not None
    return state


async def test_a_first_outcome_is_recorded_once_and_a_next_attempt_claimed_by_compare_and_set(
    system: System,
) -> None:
    repo = DeliveryRepository(system.db)
    channel = _channel()
    # Two members' outcomes of the same unclaimed first attempt (one cut off
    # mid-rebalance): the first stored stays.
    await repo.record(
        channel, "rpl_a", "retrying", attempt=1, outcome=HTTP_500, partition=1, claimed=False
    )
    await repo.record(channel, "rpl_a", "delivered", attempt=1, outcome=OK, claimed=False)
    assert (await _state(repo, channel, "rpl_a")).status == "retrying"
    assert await repo.state(channel, "rpl_never") is None

    seen = await _state(repo, channel, "rpl_a")
    claims = await asyncio.gather(*(repo.claim_next(channel, "rpl_a", seen, 2) for _ in range(3)))
    assert sorted(claims) == [False, False, True]
    claimed = await _state(repo, channel, "rpl_a")
    assert (claimed.status, claimed.attempts) == ("sending", 2)


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
        claimed=False,
    )
    listed = [p for p in await repo.pending_retries({7}) if p.channel_id == channel]
    assert [(p.reply_id, p.sender_id, p.partition) for p in listed] == [("rpl_r", "alice", 7)]
    assert not [p for p in await repo.pending_retries({8}) if p.channel_id == channel]
    state = await _state(repo, channel, "rpl_r")
    assert state.status == "retrying" and state.next_attempt_at is not None

    assert await repo.claim_next(channel, "rpl_r", state, 2)
    await repo.record(channel, "rpl_r", "delivered", attempt=2, outcome=OK)
    # A late outcome of attempt 1 (its sender cut off) changes nothing now.
    await repo.record(channel, "rpl_r", "retrying", attempt=1, outcome=HTTP_500, partition=7)
    assert not [p for p in await repo.pending_retries({7}) if p.channel_id == channel]
    state = await _state(repo, channel, "rpl_r")
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
    await repo.record(channel, "rpl_f", "failed", attempt=1, outcome=HTTP_500, claimed=False)
    now = datetime.now(UTC)
    claims = await asyncio.gather(
        *(states.claim_for_resend(channel, "rpl_f", ("failed", "delivered"), now) for _ in range(4))
    )
    won = [c for c in claims if c is not None]
    assert len(won) == 1 and won[0].status == "failed" and won[0].attempts == 1
    # The new series counts from zero, so its retries are not taken for done ones.
    claimed = await _state(repo, channel, "rpl_f")
    assert claimed.status == "pending" and claimed.attempts == 0
    assert await states.claim_for_resend(channel, "rpl_f", ("failed",), now) is None
    assert await states.claim_for_resend(channel, "rpl_none", ("failed",), now) is None
    await states.restore(channel, "rpl_f", won[0], now)
    restored = await _state(repo, channel, "rpl_f")
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


# -- the service, in-process ------------------------------------------------------


class _FlakyRecords(DeliveryRepository):
    """Fails the first write of each listed outcome, as a database outage would."""

    def __init__(self, db: Any, fail_once: set[str]) -> None:
        super().__init__(db)
        self.fail_once = set(fail_once)

    async def record(self, *args: Any, **kw: Any) -> bool:
        if args[2] in self.fail_once:
            self.fail_once.discard(args[2])
            raise ConnectionError("database away")
        return await super().record(*args, **kw)


@dataclass
class _Retries:
    """A publisher that keeps the retries instead of putting them on the broker."""

    published: list[DeliveryRetry] = field(default_factory=list)
    failures: int = 0

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def ping(self) -> None: ...

    async def publish(self, topic: str, event: BaseModel, key: bytes) -> None:
        if self.failures:
            self.failures -= 1
            raise PublishFailed("broker away")
        assert isinstance(event, DeliveryRetry)
        self.published.append(event)

    async def publish_raw(
        self, topic: str, value: bytes, key: bytes | None, headers: dict[str, str]
    ) -> None:
        raise AssertionError("no dead letters here")


@dataclass
class _Rig:
    system: System
    channel_id: str
    path: str
    repo: DeliveryRepository
    retries: _Retries
    service: DeliveryService

    def reply(self, to: str = "alice", text: str = "hello") -> OutboundReply:
        return OutboundReply(
            channel_id=self.channel_id,
            reply_id="rpl_" + uuid.uuid4().hex,
            in_reply_to="msg_" + uuid.uuid4().hex[:8],
            to=to,
            text=text,
            metadata=None,
            created_at=datetime.now(UTC),
        )

    def posts(self) -> list[tuple[str, str]]:
        return [
            (g.headers["X-HAPP-Delivery-Id"], g.headers["X-HAPP-Attempt"])
            for g in self.system.receiver.on_path(self.path)
        ]

    async def state(self, reply: OutboundReply) -> DeliveryState:
        return await _state(self.repo, self.channel_id, reply.reply_id)

    async def failed_attempts(self, reply: OutboundReply, attempts: int) -> None:
        """Record what a previous owner left: ``attempts`` made (the later ones
        claimed), each failed."""
        for attempt in range(1, attempts + 1):
            if attempt > 1:
                seen = await self.state(reply)
                assert await self.repo.claim_next(reply.channel_id, reply.reply_id, seen, attempt)
            await self.repo.record(
                reply.channel_id,
                reply.reply_id,
                "retrying",
                attempt=attempt,
                outcome=HTTP_500,
                sender_id=reply.to,
                partition=2,
                next_attempt_at=datetime.now(UTC),
                claimed=attempt > 1,
            )


@pytest_asyncio.fixture
async def rig(system: System, request: Any) -> AsyncIterator[_Rig]:
    path = f"/state-{uuid.uuid4().hex[:8]}"
    channel = await system.create_channel(path)
    settings: dict[str, Any] = getattr(request, "param", {})
    repo = _FlakyRecords(system.db, set())
    retries = _Retries()
    delivery = DeliverySettings(**{"retry_delays": [0.0, 0.0, 0.0], "timeout_s": 2.0, **settings})
    session = new_session(
        ca_file=str(system.tls.ca_file),
        allow_private=True,
        max_connections_per_host=delivery.max_connections_per_host,
    )
    try:
        service = DeliveryService(
            settings=delivery,
            allow_private=True,
            channels=ChannelCache(ChannelRepository(system.db), 1.0),
            repository=repo,
            session=session,
            publisher=retries,
            request_log=RequestLogWriter(system.db),
            health=EndpointHealth(
                EndpointHealthRepository(system.db), disable_after_hours=0, cache_ttl_s=1.0
            ),
            partitions=system.stack.config.partitions,
        )
        yield _Rig(system, channel["id"], path, repo, retries, service)
    finally:
        await session.close()


async def test_a_reply_met_twice_is_posted_once(rig: _Rig) -> None:
    first, second = rig.reply(text="one"), rig.reply(text="two")
    await rig.service.deliver_new(first, 0)
    await rig.service.deliver_new(second, 0)
    # The assistant republished the first (a redelivery): it must neither be
    # posted again nor arrive after the second.
    await rig.service.deliver_new(first, 0)
    assert rig.posts() == [(first.reply_id, "1"), (second.reply_id, "1")]
    assert (await rig.state(first)).status == "delivered"


async def test_an_attempt_in_flight_at_a_crash_is_repeated_with_the_same_delivery_id(
    rig: _Rig,
) -> None:
    reply = rig.reply()
    # The previous owner, of the version that claimed first attempts, claimed
    # attempt 1 and died before recording its outcome. (One of this version
    # leaves no state: the reply is then sent as never attempted, attempt 1.)
    await rig.system.db.deliveries.insert_one(
        {
            "_id": delivery_id(reply.channel_id, reply.reply_id),
            "channel_id": reply.channel_id,
            "reply_id": reply.reply_id,
            "status": "sending",
            "attempts": 1,
            "updated_at": datetime.now(UTC),
        }
    )
    await rig.service.deliver_new(reply, 0)
    assert rig.posts() == [(reply.reply_id, "1")]
    assert ((await rig.state(reply)).status, (await rig.state(reply)).attempts) == (
        "delivered",
        1,
    )


async def test_a_failed_outcome_write_after_the_post_does_not_post_again(
    system: System, rig: _Rig
) -> None:
    assert isinstance(rig.repo, _FlakyRecords)
    rig.repo.fail_once = {"delivered"}
    reply = rig.reply()
    await rig.service.deliver_new(reply, 0)
    assert rig.posts() == [(reply.reply_id, "1")]
    assert (await rig.state(reply)).status == "delivered"
    assert not rig.repo.fail_once  # the failure happened, and was retried


async def test_a_failed_retry_publish_is_retried_and_a_recorded_retry_is_republished(
    system: System, rig: _Rig
) -> None:
    system.receiver.decide[rig.path] = lambda _: (500, 0.0)
    reply = rig.reply()
    rig.retries.failures = 2
    await rig.service.deliver_new(reply, 3)
    assert [(r.attempt, r.reply.reply_id) for r in rig.retries.published] == [(2, reply.reply_id)]
    state = await rig.state(reply)
    assert (state.status, state.attempts) == ("retrying", 1)
    assert rig.service.gates.closed_by((reply.channel_id, reply.to)) == reply.reply_id

    # A crash after "retrying" was recorded but before its retry was on the log:
    # the reply's record comes again and puts the retry on the log (no POST).
    await rig.service.deliver_new(reply, 3)
    assert [r.attempt for r in rig.retries.published] == [2, 2]
    assert rig.posts() == [(reply.reply_id, "1")]

    # Both copies of the retry: attempt 2 is sent once.
    system.receiver.decide[rig.path] = lambda _: (200, 0.0)
    await asyncio.gather(*(rig.service.deliver_retry(r, 3) for r in rig.retries.published))
    assert rig.posts() == [(reply.reply_id, "1"), (reply.reply_id, "2")]
    state = await rig.state(reply)
    assert (state.status, state.attempts) == ("delivered", 2)
    assert rig.service.gates.closed_by((reply.channel_id, reply.to)) is None
    pending = await DeliveryStates(system.db).pending_retries({3})
    assert reply.reply_id not in {p.reply_id for p in pending}


async def test_a_stale_retry_of_an_ended_series_sends_nothing(rig: _Rig) -> None:
    reply = rig.reply()
    await rig.service.deliver_new(reply, 0)
    stale = DeliveryRetry(reply=reply, attempt=2, due_at=datetime.now(UTC))
    await rig.service.deliver_retry(stale, 0)
    assert rig.posts() == [(reply.reply_id, "1")]


async def test_a_sleeping_retry_and_a_gated_reply_let_go_when_their_partition_moves(
    rig: _Rig,
) -> None:
    held = rig.reply(text="held")
    rig.service.gates.close((held.channel_id, held.to), held.reply_id, 5)
    later = rig.reply(text="later")
    sleeping = DeliveryRetry(
        reply=held, attempt=2, due_at=datetime.now(UTC) + timedelta(seconds=30)
    )
    tasks = [
        asyncio.create_task(rig.service.deliver_new(later, 5)),
        asyncio.create_task(rig.service.deliver_retry(sleeping, 5)),
    ]
    await asyncio.sleep(0.2)
    assert not any(t.done() for t in tasks)
    rig.service.forget({5})
    # Abandoned, not done: the pipeline leaves both uncommitted for the new owner.
    for task in tasks:
        with pytest.raises(Abandoned):
            await asyncio.wait_for(task, 5)
    assert rig.posts() == []


@pytest.mark.parametrize("rig", [{"max_connections_per_host": 1}], indirect=True)
async def test_waiting_for_a_connection_is_not_part_of_the_attempt(
    system: System, rig: _Rig
) -> None:
    # Each POST takes 1.5 s against a 2 s timeout, one connection to the host:
    # the second waits 1.5 s for it and must still get its full 2 s.
    system.receiver.decide[rig.path] = lambda _: (200, 1.5)
    first, second = rig.reply(to="a"), rig.reply(to="b")
    await asyncio.gather(rig.service.deliver_new(first, 0), rig.service.deliver_new(second, 0))
    assert sorted(rig.posts()) == sorted([(first.reply_id, "1"), (second.reply_id, "1")])
    assert (await rig.state(first)).status == "delivered"
    assert (await rig.state(second)).status == "delivered"


async def test_a_stale_retry_neither_skips_the_live_one_nor_sends_twice(rig: _Rig) -> None:
    # After a takeover, the retries of attempts 2, 3 and 4 of one reply are all
    # handed out together (keyed apart); the state says attempt 3 failed.
    reply = rig.reply()
    await rig.failed_attempts(reply, 3)
    now = datetime.now(UTC)
    retries = [DeliveryRetry(reply=reply, attempt=a, due_at=now) for a in (2, 3, 4)]
    await asyncio.gather(*(rig.service.deliver_retry(r, 2) for r in retries))
    assert rig.posts() == [(reply.reply_id, "4")]
    assert (await rig.state(reply)).status == "delivered"


async def test_a_recorded_retry_missing_from_the_log_is_put_back_by_any_record(
    rig: _Rig,
) -> None:
    reply = rig.reply()
    await rig.failed_attempts(reply, 2)
    # The crash came before attempt 3's retry was published; only an older
    # record of the reply is left to be redelivered.
    await rig.service.deliver_new(reply, 2)
    assert [r.attempt for r in rig.retries.published] == [3]
    assert rig.posts() == []
