"""Subscriptions: each topic's records reach their handler decoded, ordered by
their subscription's key; a record that is not its topic's event is poison."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from happ_common.events import INBOUND_EVENT, DeliveryRetry, InboundMessage, OutboundReply
from happ_common.pipeline import PoisonRecord
from happ_common.subscriptions import Origin, Subscriptions, each_record


@dataclass
class FakeRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int = 0


REPLY = OutboundReply(
    channel_id="cm_a",
    reply_id="rpl_1",
    in_reply_to="m1",
    to="u1",
    text="Hi",
    created_at=datetime(2026, 12, 2, tzinfo=UTC),
)


def _reads(seen: list[tuple[object, Origin]]) -> Subscriptions:
    async def reply(event: OutboundReply, origin: Origin) -> None:
        seen.append((event, origin))

    async def retry(event: DeliveryRetry, origin: Origin) -> None:
        seen.append((event, origin))

    reads = Subscriptions()
    reads.subscribe("outbound.replies", OutboundReply, reply)
    reads.subscribe("delivery.retry", DeliveryRetry, retry, key=each_record)
    return reads


async def test_each_topic_reaches_its_handler_decoded_with_where_it_was_read() -> None:
    seen: list[tuple[object, Origin]] = []
    reads = _reads(seen)
    assert reads.topics == ("outbound.replies", "delivery.retry")
    await reads.handle(
        FakeRecord("outbound.replies", 3, 17, b"k", REPLY.model_dump_json().encode())
    )
    retry = DeliveryRetry(reply=REPLY, attempt=2, due_at=datetime(2026, 12, 2, tzinfo=UTC))
    await reads.handle(FakeRecord("delivery.retry", 3, 5, b"k", retry.model_dump_json().encode()))
    assert seen == [
        (REPLY, Origin("outbound.replies", 3, 17)),
        (retry, Origin("delivery.retry", 3, 5)),
    ]


def test_records_are_ordered_by_their_subscriptions_key() -> None:
    reads = _reads([])
    reply = FakeRecord("outbound.replies", 1, 9, b"cm_a\nu1", b"")
    assert reads.key_of(reply) == b"cm_a\nu1"  # the conversation: one at a time
    assert reads.key_of(FakeRecord("outbound.replies", 1, 9, None, b"")) == (
        "outbound.replies",
        1,
        9,
    )  # keyless: independent
    retry = FakeRecord("delivery.retry", 1, 9, b"cm_a\nu1", b"")
    assert reads.key_of(retry) == ("delivery.retry", 1, 9)  # never queued behind its conversation
    # Nothing reads it: keyed as by default, and dead-lettered by handle().
    assert reads.key_of(FakeRecord("other.topic", 1, 9, b"k", b"")) == b"k"


async def test_a_record_that_is_not_its_topics_event_is_poison_and_named() -> None:
    seen: list[tuple[object, Origin]] = []
    reads = _reads(seen)
    with pytest.raises(PoisonRecord, match="not a OutboundReply"):
        await reads.handle(FakeRecord("outbound.replies", 0, 0, None, b'{"text": 1}'))
    with pytest.raises(PoisonRecord, match=r"nothing here handles other\.topic"):
        await reads.handle(FakeRecord("other.topic", 0, 0, None, b"{}"))

    async def inbound(event: object, origin: Origin) -> None:
        seen.append((event, origin))

    unions = Subscriptions()
    unions.subscribe("inbound.messages", INBOUND_EVENT, inbound, name="message or command")
    with pytest.raises(PoisonRecord, match="not a message or command"):
        await unions.handle(FakeRecord("inbound.messages", 0, 0, None, b"not json"))
    assert seen == []


def test_a_topic_is_subscribed_to_once() -> None:
    reads = _reads([])

    async def again(event: InboundMessage, origin: Origin) -> None:
        raise AssertionError("never called")

    with pytest.raises(ValueError, match="subscribed to already"):
        reads.subscribe("outbound.replies", InboundMessage, again)
