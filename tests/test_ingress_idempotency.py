"""Idempotency when the claim's bookkeeping goes wrong: the ingress service in this
process, against the session's real database and broker, with the one call under
test made to fail or stall. (Repeats in the normal case: test_ingress_contract.py.)"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import REGISTRY
from pydantic import BaseModel
from pymongo.errors import AutoReconnect

from happ_common.channels import ChannelCache, ChannelRepository
from happ_common.errors import HappError
from happ_common.kafka import DirectPublisher, PublishFailed
from happ_common.request_log import RequestLogWriter
from happ_common.settings import InfraSettings
from happ_ingress.repository import IdempotencyRepository
from happ_ingress.schemas import Accepted, Duplicate
from happ_ingress.service import IncomingRequest, IngressService
from happ_ingress.settings import IngressSettings
from tests.conftest import System, eventually


class FlakyClaims(IdempotencyRepository):
    """The real repository, whose next ``failing_marks`` marks fail as a database
    blip would, after the broker has acknowledged the message."""

    def __init__(self, system: System, failing_marks: int) -> None:
        super().__init__(system.db)
        self.failing_marks = failing_marks
        self.marks = 0

    async def mark_accepted(self, channel_id: str, key: str) -> None:
        self.marks += 1
        if self.failing_marks:
            self.failing_marks -= 1
            raise AutoReconnect("connection reset by peer")
        await super().mark_accepted(channel_id, key)


class CountingPublisher:
    """The real publisher, recording each message it got an ack for; a publish may be
    held at a gate, then let through or failed, to order two requests."""

    def __init__(self, real: DirectPublisher) -> None:
        self.real = real
        self.acked: list[str] = []
        self.gates: list[tuple[asyncio.Event, bool]] = []  # (gate, fail) per next publish

    async def start(self) -> None:
        await self.real.start()

    async def stop(self) -> None:
        await self.real.stop()

    async def ping(self) -> None:
        await self.real.ping()

    async def publish(self, topic: str, event: BaseModel, key: bytes) -> None:
        if self.gates:
            gate, fail = self.gates.pop(0)
            await gate.wait()
            if fail:
                raise PublishFailed("no ack in time")
        await self.real.publish(topic, event, key)
        self.acked.append(event.model_dump()["message_id"])

    async def publish_raw(
        self, topic: str, value: bytes, key: bytes | None, headers: dict[str, str]
    ) -> None:
        await self.real.publish_raw(topic, value, key, headers)


@pytest.fixture
async def publisher(system: System) -> AsyncIterator[CountingPublisher]:
    infra = InfraSettings(kafka_bootstrap_servers=system.stack.kafka_bootstrap)
    publisher = CountingPublisher(DirectPublisher(infra, client_id="test-idempotency"))
    await publisher.start()
    try:
        yield publisher
    finally:
        await publisher.stop()


@pytest.fixture
async def request_log(system: System) -> AsyncIterator[RequestLogWriter]:
    writer = RequestLogWriter(system.db)
    await writer.start()
    try:
        yield writer
    finally:
        await writer.stop()


def ingress(
    system: System,
    claims: IdempotencyRepository,
    publisher: CountingPublisher,
    request_log: RequestLogWriter,
    **settings: Any,
) -> IngressService:
    return IngressService(
        IngressSettings(**settings),
        ChannelCache(ChannelRepository(system.db), 1.0),
        claims,
        publisher,
        request_log,
    )


def request(channel_id: str, message_id: str) -> IncomingRequest:
    body = json.dumps({"sender_id": "repeat", "text": "once", "message_id": message_id})
    return IncomingRequest(
        channel_id, f"/webhook/{channel_id}", body.encode(), "application/json", None, None
    )


def unmarked_claims() -> float:
    return REGISTRY.get_sample_value("happ_ingress_idempotency_claims_unmarked_total") or 0.0


async def fresh_message(system: System, path: str) -> tuple[str, str]:
    """A new channel, and a message id never used before."""
    channel = await system.create_channel(path)
    return channel["id"], "m-" + uuid.uuid4().hex


async def claim_of(system: System, channel_id: str, key: str) -> dict[str, Any] | None:
    return await system.db.idempotency.find_one({"_id": f"{channel_id}\n{key}"})


async def test_a_failed_accepted_mark_after_the_ack_still_answers_accepted_and_is_completed(
    system: System, publisher: CountingPublisher, request_log: RequestLogWriter
) -> None:
    channel_id, key = await fresh_message(system, "/idem-mark-once")
    claims = FlakyClaims(system, failing_marks=1)
    service = ingress(system, claims, publisher, request_log)

    first = await service.receive(request(channel_id, key))
    assert first == Accepted(message_id=key, channel_id=channel_id)

    async def marked() -> bool:
        claim = await claim_of(system, channel_id, key)
        return claim is not None and claim["accepted"] is True

    await eventually(marked, timeout_s=5)
    assert claims.marks == 2  # the failed mark, then the one made in the background
    # A repeat, on this replica or another, sees the completed claim.
    other_replica = ingress(system, IdempotencyRepository(system.db), publisher, request_log)
    assert await other_replica.receive(request(channel_id, key)) == Duplicate(message_id=key)
    assert await service.receive(request(channel_id, key)) == Duplicate(message_id=key)
    assert publisher.acked == [key]


async def test_a_claim_that_could_never_be_marked_still_makes_a_repeat_a_duplicate(
    system: System, publisher: CountingPublisher, request_log: RequestLogWriter
) -> None:
    channel_id, key = await fresh_message(system, "/idem-mark-never")
    claims = FlakyClaims(system, failing_marks=1_000)
    # publish_timeout_s sets how long a claim is protected from takeover (twice
    # that), hence how long the marking is retried: 1 s here.
    service = ingress(system, claims, publisher, request_log, publish_timeout_s=0.5)
    unmarked_before = unmarked_claims()

    assert await service.receive(request(channel_id, key)) == Accepted(
        message_id=key, channel_id=channel_id
    )

    async def given_up() -> bool:
        return not service.completing_claims

    await eventually(given_up, timeout_s=5)
    assert claims.marks >= 3  # retried, within its bound
    assert unmarked_claims() == unmarked_before + 1
    gave_up_after = claims.marks
    claim = await claim_of(system, channel_id, key)
    assert claim is not None and claim["accepted"] is False
    # The claim says "pending" for good, but this replica knows it published it.
    assert await service.receive(request(channel_id, key)) == Duplicate(message_id=key)
    assert publisher.acked == [key]
    assert claims.marks == gave_up_after


async def test_a_request_whose_claim_was_taken_over_does_not_release_the_new_owners_claim(
    system: System, publisher: CountingPublisher, request_log: RequestLogWriter
) -> None:
    channel_id, key = await fresh_message(system, "/idem-release")
    # A claim is stale (may be taken over) after 2 x publish_timeout_s = 1 s; a
    # repeat finding a claim in progress answers 503 at once.
    service = ingress(
        system,
        IdempotencyRepository(system.db),
        publisher,
        request_log,
        publish_timeout_s=0.5,
        idempotency_wait_s=0,
    )
    first_gate, second_gate = asyncio.Event(), asyncio.Event()
    publisher.gates = [(first_gate, True), (second_gate, False)]

    first = asyncio.create_task(service.receive(request(channel_id, key)))
    await asyncio.sleep(1.2)  # the first request's claim is now stale...
    second = asyncio.create_task(service.receive(request(channel_id, key)))

    async def taken_over() -> bool:
        return len(publisher.gates) == 0  # ...and the second one is publishing

    await eventually(taken_over, timeout_s=5)
    first_gate.set()  # the first publish fails: its request releases its claim
    with pytest.raises(HappError) as refused:
        await first
    assert refused.value.code == "SERVICE_UNAVAILABLE"

    # The second request still owns the claim: a third must not publish too.
    with pytest.raises(HappError) as third:
        await service.receive(request(channel_id, key))
    assert third.value.code == "SERVICE_UNAVAILABLE"
    second_gate.set()
    assert await second == Accepted(message_id=key, channel_id=channel_id)
    assert publisher.acked == [key]
