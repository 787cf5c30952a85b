"""Idempotency when the record's bookkeeping goes wrong: the ingress service in this
process, against the session's real database and broker, with the one call under
test made to fail or stall. (Repeats in the normal case: test_ingress_contract.py.)"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY
from pydantic import BaseModel
from pymongo.errors import AutoReconnect

from happ_common.channels import ChannelCache, ChannelRepository
from happ_common.errors import HappError
from happ_common.ids import accepted_log_id
from happ_common.kafka import DirectPublisher, PublishFailed
from happ_common.request_log import RequestLogWriter
from happ_common.settings import InfraSettings
from happ_ingress import service as ingress_service
from happ_ingress.repository import AcceptedRecords
from happ_ingress.schemas import Accepted, Duplicate
from happ_ingress.service import IncomingRequest, IngressService
from happ_ingress.settings import IngressSettings
from tests.conftest import System, eventually


class FlakyRecords(AcceptedRecords):
    """The real repository, whose next ``failing`` records fail as a database
    blip would, after the broker has acknowledged the message."""

    def __init__(self, system: System, failing: int) -> None:
        super().__init__(system.db)
        self.failing = failing
        self.records = 0
        # Set: the records after the failing ones wait for it.
        self.held: asyncio.Event | None = None

    async def record(self, message: dict[str, Any], entry: dict[str, Any]) -> bool:
        self.records += 1
        if self.failing:
            self.failing -= 1
            raise AutoReconnect("connection reset by peer")
        if self.held is not None:
            await self.held.wait()
        return await super().record(message, entry)


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
    claims: AcceptedRecords,
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


def lost_records() -> float:
    return REGISTRY.get_sample_value("happ_ingress_idempotency_claims_unmarked_total") or 0.0


async def fresh_message(system: System, path: str) -> tuple[str, str]:
    """A new channel, and a message id never used before."""
    channel = await system.create_channel(path)
    return channel["id"], "m-" + uuid.uuid4().hex


async def incoming(system: System, request_log: RequestLogWriter, channel_id: str) -> list[Any]:
    """The channel's incoming entries as the admin lists them (an accepted
    webhook's is kept on the user's message it brought); the reply's delivery
    attempt is logged on the channel too (outgoing)."""
    await request_log.flush()
    return await system.log(channel_id, direction="incoming")


async def record_of(system: System, channel_id: str, key: str) -> dict[str, Any] | None:
    """The accepted record: the user's message, with the request's entry on it
    (the assistant may store the message first, from the event, without it)."""
    return await system.db.messages.find_one(
        {"channel_id": channel_id, "message_id": key, "request": {"$exists": True}}
    )


async def test_a_failed_record_after_the_ack_still_answers_accepted_and_is_completed(
    system: System, publisher: CountingPublisher, request_log: RequestLogWriter
) -> None:
    channel_id, key = await fresh_message(system, "/idem-record-once")
    records = FlakyRecords(system, failing=1)
    service = ingress(system, records, publisher, request_log)

    first = await service.receive(request(channel_id, key))
    assert first == Accepted(message_id=key, channel_id=channel_id)

    async def recorded() -> bool:
        return await record_of(system, channel_id, key) is not None

    await eventually(recorded, timeout_s=5)
    assert records.records == 2  # the failed record, then the one made in the background
    # A repeat reaching this replica is a duplicate without reaching the broker.
    assert await service.receive(request(channel_id, key)) == Duplicate(message_id=key)
    assert publisher.acked == [key]
    # One reaching another replica is published again (the assistant answers a
    # message id once) and answered as the duplicate it is.
    other_replica = ingress(system, AcceptedRecords(system.db), publisher, request_log)
    assert await other_replica.receive(request(channel_id, key)) == Duplicate(message_id=key)
    assert publisher.acked == [key, key]


async def test_a_record_that_could_never_be_written_still_makes_a_repeat_here_a_duplicate(
    system: System, publisher: CountingPublisher, request_log: RequestLogWriter
) -> None:
    channel_id, key = await fresh_message(system, "/idem-record-never")
    records = FlakyRecords(system, failing=1_000)
    # The record is retried for 2 x publish_timeout_s: 1 s here.
    service = ingress(system, records, publisher, request_log, publish_timeout_s=0.5)
    lost_before = lost_records()

    assert await service.receive(request(channel_id, key)) == Accepted(
        message_id=key, channel_id=channel_id
    )

    async def given_up() -> bool:
        return not service.completing_records

    await eventually(given_up, timeout_s=5)
    assert records.records >= 3  # retried, within its bound
    assert lost_records() == lost_before + 1
    gave_up_after = records.records
    assert await record_of(system, channel_id, key) is None
    # No record, but this replica knows it accepted the message.
    assert await service.receive(request(channel_id, key)) == Duplicate(message_id=key)
    assert publisher.acked == [key]
    assert records.records == gave_up_after


async def test_a_slow_record_does_not_hold_the_webhook_and_lands_later(
    system: System, publisher: CountingPublisher, request_log: RequestLogWriter
) -> None:
    channel_id, key = await fresh_message(system, "/idem-record-slow")
    # No wait at all for the record: the answer comes as soon as the broker acked.
    service = ingress(
        system, AcceptedRecords(system.db), publisher, request_log, idempotency_wait_s=0
    )
    assert await service.receive(request(channel_id, key)) == Accepted(
        message_id=key, channel_id=channel_id
    )
    assert service.completing_records  # still being written

    async def recorded() -> bool:
        return await record_of(system, channel_id, key) is not None and not (
            service.completing_records
        )

    await eventually(recorded, timeout_s=5)
    # Another replica now finds the record.
    other_replica = ingress(system, AcceptedRecords(system.db), publisher, request_log)
    assert await other_replica.receive(request(channel_id, key)) == Duplicate(message_id=key)


async def test_a_copy_whose_publish_failed_leaves_no_record_so_its_repeat_is_accepted(
    system: System, publisher: CountingPublisher, request_log: RequestLogWriter
) -> None:
    channel_id, key = await fresh_message(system, "/idem-publish-failed")
    service = ingress(system, AcceptedRecords(system.db), publisher, request_log)
    failed = asyncio.Event()
    failed.set()  # the first publish fails at once
    publisher.gates = [(failed, True)]

    with pytest.raises(HappError) as refused:
        await service.receive(request(channel_id, key))
    assert refused.value.code == "SERVICE_UNAVAILABLE"
    assert await record_of(system, channel_id, key) is None

    assert await service.receive(request(channel_id, key)) == Accepted(
        message_id=key, channel_id=channel_id
    )
    assert publisher.acked == [key]


async def test_racing_repeats_on_two_replicas_are_accepted_once(
    system: System, publisher: CountingPublisher, request_log: RequestLogWriter
) -> None:
    channel_id, key = await fresh_message(system, "/idem-race-replicas")
    replicas = [
        ingress(system, AcceptedRecords(system.db), publisher, request_log) for _ in range(2)
    ]
    answers = await asyncio.gather(
        *(r.receive(request(channel_id, key)) for r in replicas for _ in range(4))
    )
    assert answers.count(Accepted(message_id=key, channel_id=channel_id)) == 1
    assert answers.count(Duplicate(message_id=key)) == 7
    # Repeats on one replica wait for its first copy; each replica's first copy
    # reached the broker, and the assistant answers the message id once
    # (test_ingress_contract.py).
    assert publisher.acked == [key] * 2


async def test_an_accepted_message_writes_one_document_its_log_entry_and_record_in_one(
    system: System, publisher: CountingPublisher, request_log: RequestLogWriter
) -> None:
    channel_id, key = await fresh_message(system, "/idem-one-document")
    service = ingress(system, AcceptedRecords(system.db), publisher, request_log)
    assert await service.receive(request(channel_id, key)) == Accepted(
        message_id=key, channel_id=channel_id
    )
    entries = await incoming(system, request_log, channel_id)
    assert len(entries) == 1  # no second entry from the request-log writer
    (entry,) = entries
    record = await record_of(system, channel_id, key)
    assert record is not None and record["request"]["id"] == entry["id"]
    assert entry["id"] == accepted_log_id(channel_id, key)
    assert record["role"] == "user" and record["text"] == "once" and record["message_id"] == key
    assert await system.db.request_log.count_documents({"channel_id": channel_id}) == 0
    assert entry["direction"] == "incoming" and entry["status_code"] == 200
    assert entry["message_id"] == key and entry["url"] == f"/webhook/{channel_id}"
    assert json.loads(entry["request_body"])["text"] == "once"
    assert entry["error_code"] is None and entry["duration_ms"] >= 0

    # A repeat is a request of its own, with its own entry.
    other_replica = ingress(system, AcceptedRecords(system.db), publisher, request_log)
    assert await other_replica.receive(request(channel_id, key)) == Duplicate(message_id=key)
    entries = await incoming(system, request_log, channel_id)
    assert len(entries) == 2
    assert {e["id"] for e in entries} > {entry["id"]}


async def test_a_key_accepted_more_than_24_hours_ago_is_a_new_message_the_old_entry_kept(
    system: System, publisher: CountingPublisher, request_log: RequestLogWriter
) -> None:
    channel_id, key = await fresh_message(system, "/idem-window")
    service = ingress(system, AcceptedRecords(system.db), publisher, request_log)
    assert await service.receive(request(channel_id, key)) == Accepted(
        message_id=key, channel_id=channel_id
    )
    old = await record_of(system, channel_id, key)
    assert old is not None
    long_ago = old["request"]["created_at"] - timedelta(hours=24, minutes=1)
    await system.db.messages.update_one(
        {"_id": old["_id"]}, {"$set": {"request.created_at": long_ago}}
    )

    # Two replicas race on the reused key: one accepts it, the other is its repeat.
    replicas = [
        ingress(system, AcceptedRecords(system.db), publisher, request_log) for _ in range(2)
    ]
    answers = await asyncio.gather(*(r.receive(request(channel_id, key)) for r in replicas))
    assert sorted(a.status for a in answers) == ["accepted", "duplicate"]
    assert publisher.acked == [key] * 3
    new = await record_of(system, channel_id, key)
    assert new is not None and new["request"]["created_at"] > long_ago + timedelta(hours=24)
    assert new["accepted_by"] != old["accepted_by"]
    # Still one message: the assistant sends the earlier one's reply again.
    assert await system.db.messages.count_documents({"_id": old["_id"]}) == 1
    entries = await incoming(system, request_log, channel_id)
    # The first request's entry, kept once; the new record; the repeat's entry.
    assert len(entries) == 3
    kept = await system.db.request_log.find(
        {"channel_id": channel_id, "created_at": long_ago}
    ).to_list(None)
    assert len(kept) == 1 and kept[0]["_id"] != new["request"]["id"]
    assert "accepted_by" not in kept[0]
    assert kept[0]["_id"] in {e["id"] for e in entries}


async def test_a_record_retried_in_the_background_and_beaten_by_another_replica_keeps_its_entry(
    system: System, publisher: CountingPublisher, request_log: RequestLogWriter
) -> None:
    channel_id, key = await fresh_message(system, "/idem-record-beaten")
    records = FlakyRecords(system, failing=1)
    records.held = asyncio.Event()
    service = ingress(system, records, publisher, request_log)
    # This replica's publish waits while a repeat reaching another replica is
    # published and recorded first. (The other way round, the session's assistant
    # could store this one's message before the repeat arrived: a duplicate.)
    gate = asyncio.Event()
    publisher.gates.append((gate, False))
    first = asyncio.create_task(service.receive(request(channel_id, key)))

    async def at_the_gate() -> bool:
        return not publisher.gates

    await eventually(at_the_gate, timeout_s=5)
    other_replica = ingress(system, AcceptedRecords(system.db), publisher, request_log)
    assert await other_replica.receive(request(channel_id, key)) == Accepted(
        message_id=key, channel_id=channel_id
    )
    # This one's record fails after its ack: accepted, and retried in the
    # background, where it finds the other replica's record.
    gate.set()
    assert await first == Accepted(message_id=key, channel_id=channel_id)
    records.held.set()

    async def settled() -> bool:
        return not service.completing_records

    await eventually(settled, timeout_s=5)
    entries = await incoming(system, request_log, channel_id)
    # Both requests are in the log, once each: the other replica's is the record.
    assert len(entries) == 2
    record = await record_of(system, channel_id, key)
    assert record is not None and record["request"]["id"] in {e["id"] for e in entries}
    assert publisher.acked == [key, key]  # the assistant answers the id once


async def test_records_beyond_the_background_byte_bound_are_tried_once_and_logged(
    system: System,
    publisher: CountingPublisher,
    request_log: RequestLogWriter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Room for one small record in the background, not for this one's 8 KB text.
    monkeypatch.setattr(ingress_service, "_BACKGROUND_RECORDS_BYTES", 10_000)
    channel_id, key = await fresh_message(system, "/idem-record-bytes")
    records = FlakyRecords(system, failing=1_000)
    service = ingress(system, records, publisher, request_log)
    lost_before = lost_records()
    body = json.dumps({"sender_id": "big", "text": "x" * 8_000, "message_id": key})
    req = IncomingRequest(
        channel_id, f"/webhook/{channel_id}", body.encode(), "application/json", None, None
    )
    assert await service.receive(req) == Accepted(message_id=key, channel_id=channel_id)

    async def given_up() -> bool:
        return not service.completing_records

    await eventually(given_up, timeout_s=5)
    assert records.records == 1  # tried once, not retried
    assert lost_records() == lost_before + 1
    # Its entry went to the request log instead.
    entries = await incoming(system, request_log, channel_id)
    assert [e["message_id"] for e in entries] == [key]
