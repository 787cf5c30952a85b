"""The AsyncAPI document of the topics (``happ_common.asyncapi``): checked in as
generated, served by the consumer services, well-formed, and true to what the
services really put on the broker."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord
from jsonschema import Draft7Validator  # type: ignore[import-untyped]
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from happ_assistant.settings import AssistantServiceSettings
from happ_common.asyncapi import GROUP_IDS, examples, render
from happ_common.dead_letters import DeadLetterPublisher
from happ_common.events import (
    INBOUND_EVENT,
    Attachment,
    Author,
    ConversationCommand,
    DeliveryRetry,
    InboundMessage,
    OutboundReply,
)
from happ_common.ids import conversation_key, reply_id_for
from happ_common.kafka import Publisher
from happ_common.topics import (
    ALL_TOPICS,
    DELIVERY_RETRY,
    INBOUND_MESSAGES,
    OUTBOUND_REPLIES,
    PIPELINE_TOPICS,
    dead_letter_topic,
)
from happ_delivery.settings import DeliverySettings
from happ_devtools.receiver import Received
from tests.conftest import System, eventually

CHECKED_IN = Path(__file__).resolve().parent.parent / "docs" / "asyncapi.json"
_BASE = "urn:happ:asyncapi"
# Every message's key has the same schema: the conversation.
KEY = "#/channels/inboundMessages/messages/inboundMessage/bindings/kafka/key"
AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _doc() -> dict[str, Any]:
    # As a reader gets it: through JSON, never the cached object itself.
    doc: dict[str, Any] = json.loads(render())
    return doc


def _validator(doc: dict[str, Any], pointer: str) -> Any:
    """A validator of the schema at ``pointer`` (``#/...``) in the document, its
    references resolved within the document (AsyncAPI schemas are JSON Schema
    draft 07 plus a few keywords)."""
    registry: Registry[Any] = Registry().with_resource(
        _BASE, Resource.from_contents(doc, default_specification=DRAFT7)
    )
    return Draft7Validator(
        {"$ref": _BASE + pointer}, registry=registry, format_checker=Draft7Validator.FORMAT_CHECKER
    )


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for escaped in ref[2:].split("/"):
        part = escaped.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"{ref} does not resolve"
        node = node[part]
    return node


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _channel_of(doc: dict[str, Any], topic: str) -> dict[str, Any]:
    found = [c for c in doc["channels"].values() if c["address"] == topic]
    assert len(found) == 1, topic
    channel: dict[str, Any] = found[0]
    return channel


def _message_pointer(doc: dict[str, Any], topic: str, model: str) -> str:
    """The payload schema of the message ``model`` on ``topic``."""
    name = next(n for n, c in doc["channels"].items() if c["address"] == topic)
    messages = doc["channels"][name]["messages"]
    found = [m for m, message in messages.items() if message["name"] == model]
    assert found, f"no {model} message on {topic}"
    return f"#/channels/{name}/messages/{found[0]}/payload"


def _errors(doc: dict[str, Any], pointer: str, instance: Any) -> list[str]:
    return [e.message for e in _validator(doc, pointer).iter_errors(instance)]


# -- the checked-in file ------------------------------------------------------------


def test_the_checked_in_document_is_the_generated_one() -> None:
    assert CHECKED_IN.read_text(encoding="utf-8") == render(), (
        "docs/asyncapi.json differs from what happ_common.asyncapi generates from the event "
        "models: run `make asyncapi` and commit docs/asyncapi.json"
    )


# -- structure ----------------------------------------------------------------------


def test_every_topic_is_a_channel_and_every_reference_resolves() -> None:
    doc = _doc()
    assert doc["asyncapi"] == "3.0.0"
    assert doc["info"]["title"] and doc["info"]["version"]
    assert doc["servers"]["kafka"]["protocol"] == "kafka"
    assert {c["address"] for c in doc["channels"].values()} == set(ALL_TOPICS)
    for ref in _refs(doc):
        _resolve(doc, ref)
    for schema in doc["components"]["schemas"].values():
        Draft7Validator.check_schema(schema)


def test_every_channel_has_keyed_messages_with_headers_and_payload() -> None:
    doc = _doc()
    key = doc["channels"]["inboundMessages"]["messages"]["inboundMessage"]["bindings"]
    for name, channel in doc["channels"].items():
        assert channel["messages"], name
        assert channel["bindings"]["kafka"]["topic"] == channel["address"]
        for message in channel["messages"].values():
            assert "payload" in message and "headers" in message, (name, message["name"])
            # One key for every record of every topic: the conversation.
            assert message["bindings"] == key, (name, message["name"])
        if channel["address"] in PIPELINE_TOPICS:
            partitioning = channel["x-happ-partitioning"]
            assert partitioning["partitions"] == "KAFKA_PARTITIONS"
            assert set(partitioning["coPartitionedWith"]) == set(PIPELINE_TOPICS) - {
                channel["address"]
            }


def test_operations_reference_their_channels_messages() -> None:
    doc = _doc()
    for op_id, op in doc["operations"].items():
        assert op["action"] in ("send", "receive"), op_id
        channel_ref = op["channel"]["$ref"]
        _resolve(doc, channel_ref)
        assert op["messages"], op_id
        for message in op["messages"]:
            # AsyncAPI 3.0: an operation's messages are its channel's.
            assert message["$ref"].startswith(channel_ref + "/messages/"), (op_id, message)
            _resolve(doc, message["$ref"])
        assert [t["name"] for t in op["tags"]] in (
            ["ingress"],
            ["admin"],
            ["assistant"],
            ["delivery"],
        ), op_id


def _who(doc: dict[str, Any], topic: str, action: str) -> dict[str, set[str]]:
    """Service → the messages (model names) it ``action``s on ``topic``."""
    found: dict[str, set[str]] = {}
    for op in doc["operations"].values():
        channel = _resolve(doc, op["channel"]["$ref"])
        if channel["address"] == topic and op["action"] == action:
            names = {_resolve(doc, m["$ref"])["name"] for m in op["messages"]}
            found.setdefault(op["tags"][0]["name"], set()).update(names)
    return found


def test_who_publishes_and_who_consumes_each_topic() -> None:
    doc = _doc()
    command, inbound = "ConversationCommand", "InboundMessage"
    assert _who(doc, INBOUND_MESSAGES, "send") == {
        "ingress": {inbound},
        "admin": {inbound, command},  # commands, and replays of dead letters
    }
    assert _who(doc, INBOUND_MESSAGES, "receive") == {"assistant": {inbound, command}}
    assert _who(doc, OUTBOUND_REPLIES, "send") == {
        "assistant": {"OutboundReply"},
        "admin": {"OutboundReply"},  # resends and replays
    }
    assert _who(doc, OUTBOUND_REPLIES, "receive") == {"delivery": {"OutboundReply"}}
    assert _who(doc, DELIVERY_RETRY, "send") == {
        "delivery": {"DeliveryRetry"},
        "admin": {"DeliveryRetry"},
    }
    assert _who(doc, DELIVERY_RETRY, "receive") == {"delivery": {"DeliveryRetry"}}
    consumers = {INBOUND_MESSAGES: "assistant", OUTBOUND_REPLIES: "delivery"}
    for topic in PIPELINE_TOPICS:
        dlq = dead_letter_topic(topic)
        assert _who(doc, dlq, "send") == {consumers.get(topic, "delivery"): {"DeadLetter"}}
        assert _who(doc, dlq, "receive") == {"admin": {"DeadLetter"}}


def test_consumer_groups_are_the_services_defaults() -> None:
    defaults = {
        "assistant": AssistantServiceSettings.model_fields["group_id"].default,
        "delivery": DeliverySettings.model_fields["group_id"].default,
    }
    assert defaults == GROUP_IDS
    doc = _doc()
    for op in doc["operations"].values():
        if op["action"] == "receive" and op["tags"][0]["name"] in GROUP_IDS:
            group = op["bindings"]["kafka"]["groupId"]
            assert group["default"] == GROUP_IDS[op["tags"][0]["name"]]


# -- the schemas against events the models make ---------------------------------------


def _events() -> list[tuple[str, Any]]:
    """(topic, event) for many shapes of every event."""
    reply = OutboundReply(
        channel_id="cm_abcdefghijkl",
        reply_id=reply_id_for("cm_abcdefghijkl", "m1"),
        in_reply_to="m1",
        to="user",
        text="hi",
        created_at=AT,
    )
    handoff = reply.model_copy(
        update={
            "in_reply_to": None,
            "event": "handoff",
            "author": Author(type="system", name="System"),
            "attachments": [Attachment(type="image", url="https://x.test/a.png")],
            "metadata": {"nested": {"a": [1, 2]}},
        }
    )
    operator = Author(type="operator", name="Olena", id="usr_1")
    commands = [
        ConversationCommand(
            type=kind,
            channel_id="cm_abcdefghijkl",
            sender_id="user",
            message_id=f"evt_{kind}",
            operator=operator,
            at=AT,
        )
        for kind in ("operator_reply", "take", "hand_back", "close")
    ]
    return [
        *((INBOUND_MESSAGES, e) for e in examples().values() if isinstance(e, InboundMessage)),
        (
            INBOUND_MESSAGES,
            InboundMessage(
                channel_id="cm_abcdefghijkl",
                message_id="m2",
                sender_id="u",
                text="",
                attachments=[Attachment(type="file", url="https://x.test/f", name="f.pdf")],
                received_at=AT,
            ),
        ),
        *((INBOUND_MESSAGES, c) for c in commands),
        (OUTBOUND_REPLIES, reply),
        (OUTBOUND_REPLIES, handoff),
        (OUTBOUND_REPLIES, reply.model_copy(update={"test": True, "resend": True})),
        (DELIVERY_RETRY, DeliveryRetry(reply=handoff, attempt=4, due_at=AT)),
    ]


@pytest.mark.parametrize(("topic", "event"), _events())
def test_events_made_by_the_models_fit_their_messages(topic: str, event: Any) -> None:
    doc = _doc()
    payload = json.loads(event.model_dump_json())  # what the publishers send
    pointer = _message_pointer(doc, topic, type(event).__name__)
    assert _errors(doc, pointer, payload) == []
    # ...and it is the message the consumer decodes it as.
    if topic == INBOUND_MESSAGES:
        assert type(INBOUND_EVENT.validate_python(payload)) is type(event)
    reply = event.reply if isinstance(event, DeliveryRetry) else event
    sender = reply.to if isinstance(reply, OutboundReply) else reply.sender_id
    assert _errors(doc, KEY, conversation_key(reply.channel_id, sender).decode()) == []


def test_every_example_in_the_document_is_an_event_of_its_message() -> None:
    doc = _doc()
    for name, channel in doc["channels"].items():
        for message_name, message in channel["messages"].items():
            for example in message.get("examples", []):
                pointer = f"#/channels/{name}/messages/{message_name}"
                assert _errors(doc, pointer + "/payload", example["payload"]) == []
                assert _errors(doc, pointer + "/headers", example["headers"]) == []


def test_the_schemas_reject_what_the_consumers_reject() -> None:
    doc = _doc()
    message = json.loads(examples()["inboundMessage"].model_dump_json())
    inbound = _message_pointer(doc, INBOUND_MESSAGES, "InboundMessage")
    assert _errors(doc, inbound, {k: v for k, v in message.items() if k != "channel_id"})
    assert _errors(doc, inbound, {**message, "attachments": [{"type": "video", "url": "u"}]})
    retry = json.loads(examples()["deliveryRetry"].model_dump_json())
    pointer = _message_pointer(doc, DELIVERY_RETRY, "DeliveryRetry")
    assert _errors(doc, pointer, {**retry, "attempt": 1})  # Field(ge=2)
    assert _errors(doc, KEY, "user_42")  # no channel
    assert _errors(doc, "#/components/schemas/PipelineHeaders", {"content-type": "text/plain"})


async def test_dead_letter_headers_are_the_ones_the_pipeline_writes() -> None:
    sent: list[dict[str, str]] = []

    class Capture:
        async def publish_raw(
            self, topic: str, value: bytes, key: bytes | None, headers: dict[str, str]
        ) -> None:
            sent.append(headers)

    @dataclass
    class Rec:
        topic: str = INBOUND_MESSAGES
        partition: int = 3
        offset: int = 41
        key: bytes | None = conversation_key("cm_abcdefghijkl", "u")
        value: bytes | None = b"garbage"
        timestamp: int = 0

    publisher = DeadLetterPublisher(cast(Publisher, Capture()), "assistant")
    await publisher(Rec(), ValueError("x" * 5000))
    doc = _doc()
    headers = {**sent[0], "content-type": ""}  # FastStream's, for a raw value
    assert _errors(doc, "#/components/schemas/DeadLetterHeaders", headers) == []
    assert set(headers) <= set(doc["components"]["schemas"]["DeadLetterHeaders"]["properties"])


# -- served by the consumer services, and true to the broker's records -----------------


async def test_each_consumer_service_serves_the_document(system: System) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        for service in ("assistant", "delivery"):
            resp = await http.get(system.url(service, "/asyncapi.json"))
            assert resp.status_code == 200, (service, resp.text)
            assert resp.headers["content-type"].startswith("application/json")
            assert resp.json() == _doc(), service
            openapi = (await http.get(system.url(service, "/openapi.json"))).json()
            assert "get" in openapi["paths"]["/asyncapi.json"], service


async def _read_all(bootstrap: str, topics: tuple[str, ...]) -> list[ConsumerRecord[bytes, bytes]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        found: list[ConsumerRecord[bytes, bytes]] = []
        while batches := await consumer.getmany(timeout_ms=1000):
            for records in batches.values():
                found.extend(records)
        return found
    finally:
        await consumer.stop()


async def test_records_on_the_broker_fit_the_document(system: System) -> None:
    """A message whose first delivery fails (inbound, reply, retry), and an undecodable
    record that is dead-lettered and replayed: every record's key, headers and value
    as the document describes them."""

    def first_fails(got: Received) -> tuple[int, float]:
        return (500, 0.0) if len(system.receiver.on_path("/asyncapi")) == 1 else (200, 0.0)

    system.receiver.decide["/asyncapi"] = first_fails
    channel = (await system.create_channel("/asyncapi"))["id"]
    user, poison = conversation_key(channel, "asyncapi-user"), conversation_key(channel, "bad")
    sent = await system.send(channel, {"sender_id": "asyncapi-user", "text": "hello"})
    assert sent.status_code == 200, sent.text
    marker = uuid.uuid4().hex
    producer = AIOKafkaProducer(bootstrap_servers=system.stack.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            INBOUND_MESSAGES, f"not an event {marker}".encode(), key=poison
        )
    finally:
        await producer.stop()
    await system.receiver.wait_for("/asyncapi", 2, timeout_s=30)

    async def letters() -> list[dict[str, Any]]:
        resp = await system.admin.get("/api/dead-letters", params={"limit": 1000})
        return [d for d in resp.json()["items"] if marker in d["value"]]

    async def parked(count: int) -> bool:
        return len(await letters()) >= count

    await eventually(lambda: parked(1), timeout_s=30)
    replay = await system.admin.post(f"/api/dead-letters/{(await letters())[0]['id']}/replay")
    assert replay.status_code == 200, replay.text
    await eventually(lambda: parked(2), timeout_s=30)

    doc = _doc()
    topics = (*PIPELINE_TOPICS, dead_letter_topic(INBOUND_MESSAGES))
    records = [
        r for r in await _read_all(system.stack.kafka_bootstrap, topics) if r.key in (user, poison)
    ]
    seen: dict[str, list[str]] = {}
    for record in records:
        channel_doc = _channel_of(doc, record.topic)
        message = next(iter(channel_doc["messages"].values()))
        headers = {k: v.decode() for k, v in record.headers}
        if record.topic == INBOUND_MESSAGES and record.key == poison and not headers:
            continue  # the test's own record, not HAPP's
        assert record.key is not None
        assert _errors(doc, KEY, record.key.decode()) == []
        header_schema = _resolve(doc, message["headers"]["$ref"])
        assert set(headers) <= set(header_schema["properties"]), (record.topic, headers)
        assert _errors(doc, message["headers"]["$ref"], headers) == [], (record.topic, headers)
        if record.key == user:
            payload = json.loads(record.value or b"")
            model = (
                type(INBOUND_EVENT.validate_python(payload)).__name__
                if record.topic == INBOUND_MESSAGES
                else {OUTBOUND_REPLIES: "OutboundReply", DELIVERY_RETRY: "DeliveryRetry"}[
                    record.topic
                ]
            )
            pointer = _message_pointer(doc, record.topic, model)
            assert _errors(doc, pointer, payload) == [], (record.topic, payload)
        kind = "replayed" if "happ-replayed-from" in headers else record.topic
        seen.setdefault(kind, []).append(record.key.decode())
    assert set(seen) == {*topics, "replayed"}, seen
    assert seen[dead_letter_topic(INBOUND_MESSAGES)].count(poison.decode()) >= 2
