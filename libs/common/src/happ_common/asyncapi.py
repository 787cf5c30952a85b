"""The AsyncAPI 3.0 document of HAPP's topics, built from the event models.

``asyncapi_document()`` describes what travels on ``inbound.messages``,
``outbound.replies`` and ``delivery.retry`` (and their ``<topic>.dlq`` dead-letter
topics): each event's JSON schema as pydantic derives it from ``events.py``, the
record key (the conversation), the headers the publishers set, and which service
sends and which receives each. The consumer services serve it at
``GET /asyncapi.json`` (``asyncapi_router``); ``docs/asyncapi.json`` is the same
document checked in, regenerated with ``make asyncapi``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from happ_common import dead_letters as dl
from happ_common.events import (
    ASSISTANT,
    Author,
    ConversationCommand,
    DeliveryRetry,
    InboundMessage,
    OutboundReply,
)
from happ_common.ids import CHANNEL_ID_RE, reply_id_for
from happ_common.settings import InfraSettings
from happ_common.topics import (
    DELIVERY_RETRY,
    INBOUND_MESSAGES,
    OUTBOUND_REPLIES,
    PIPELINE_TOPICS,
    dead_letter_topic,
)

ASYNCAPI_PATH = "/asyncapi.json"
# Kafka bindings (https://github.com/asyncapi/bindings/tree/master/kafka).
_KAFKA_BINDING = "0.5.0"
_SCHEMAS = "#/components/schemas/"
_CONTENT_TYPE = "application/json"

# The record key of every topic: ``happ_common.ids.conversation_key``.
CONVERSATION_KEY: dict[str, Any] = {
    "type": "string",
    "description": "The conversation: `<channel_id>\\n<sender_id>`, UTF-8 "
    "(happ_common.ids.conversation_key). One conversation, one partition of each topic, "
    "one order.",
    "pattern": CHANNEL_ID_RE.pattern.removesuffix("$") + "\\n",
}

# Headers of a record on a pipeline topic. Consumers read only the key and the value.
PIPELINE_HEADERS: dict[str, Any] = {
    "type": "object",
    "required": ["content-type"],
    "properties": {
        "content-type": {"type": "string", "const": _CONTENT_TYPE},
        "correlation_id": {
            "type": "string",
            "description": "Set by FastStream on what the assistant, delivery and admin "
            "services publish (a new UUID per publish); absent on the ingress's records. "
            "HAPP does not read it.",
        },
        "traceparent": {
            "type": "string",
            "pattern": r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
            "description": "W3C trace context of the span that published the record, when "
            "OpenTelemetry tracing is on (happ_common.tracing); the consumer's span continues it.",
        },
        "tracestate": {
            "type": "string",
            "description": "W3C trace state, with traceparent, when the trace carries any.",
        },
        "happ-replayed-from": {
            "type": "string",
            "pattern": r"^[a-z.]+\.dlq:\d+:\d+$",
            "description": "On a record the admin API replayed from a dead-letter topic: "
            "the dead letter's id, `<topic>.dlq:<partition>:<offset>`.",
        },
    },
}

# Headers of a dead letter (``happ_common.dead_letters``): where it came from and why.
DEAD_LETTER_HEADERS: dict[str, Any] = {
    "type": "object",
    "required": [
        dl.ORIGIN_TOPIC,
        dl.ORIGIN_PARTITION,
        dl.ORIGIN_OFFSET,
        dl.CONSUMER,
        dl.ERROR,
        dl.PARKED_AT,
    ],
    "properties": {
        dl.ORIGIN_TOPIC: {"type": "string", "enum": list(PIPELINE_TOPICS)},
        dl.ORIGIN_PARTITION: {"type": "string", "pattern": r"^\d+$"},
        dl.ORIGIN_OFFSET: {"type": "string", "pattern": r"^\d+$"},
        dl.CONSUMER: {
            "type": "string",
            "enum": ["assistant", "delivery"],
            "description": "The consumer that could not handle the record.",
        },
        dl.ERROR: {
            "type": "string",
            "maxLength": 2000,
            "description": "`<exception type>: <message>`: why it was parked.",
        },
        dl.PARKED_AT: {"type": "string", "format": "date-time"},
        "content-type": {
            "type": "string",
            "description": "Empty: the value is the original record's, byte for byte.",
        },
        "correlation_id": PIPELINE_HEADERS["properties"]["correlation_id"],
        "traceparent": PIPELINE_HEADERS["properties"]["traceparent"],
        "tracestate": PIPELINE_HEADERS["properties"]["tracestate"],
    },
}

# Every message's Kafka binding: keyed by conversation. (The key's schema inline: a
# Reference there matches two branches of the AsyncAPI 3.0 JSON schema's oneOf.)
_KEYED = {"kafka": {"key": CONVERSATION_KEY, "bindingVersion": _KAFKA_BINDING}}

# The services, as the operations' tags name them.
_SERVICES = {
    "ingress": "FastAPI: incoming webhooks onto inbound.messages (acks=all before the 200).",
    "admin": "FastAPI: operators' actions and resends onto the pipeline, dead letters listed "
    "and replayed.",
    "assistant": "Consumer of inbound.messages: the AI (or an operator's) reply onto "
    "outbound.replies.",
    "delivery": "Consumer of outbound.replies and delivery.retry: the signed HTTPS POST, "
    "retries scheduled on delivery.retry.",
}
# The consumer groups' defaults (HAPP_ASSISTANT_GROUP_ID, HAPP_DELIVERY_GROUP_ID).
GROUP_IDS = {"assistant": "happ-assistant", "delivery": "happ-delivery"}

_CHANNELS = {
    INBOUND_MESSAGES: "inboundMessages",
    OUTBOUND_REPLIES: "outboundReplies",
    DELIVERY_RETRY: "deliveryRetry",
}
# The messages of each topic, by their name in its channel, and the model of each.
_MESSAGES: dict[str, dict[str, type[BaseModel]]] = {
    INBOUND_MESSAGES: {
        "inboundMessage": InboundMessage,
        "conversationCommand": ConversationCommand,
    },
    OUTBOUND_REPLIES: {"outboundReply": OutboundReply},
    DELIVERY_RETRY: {"deliveryRetry": DeliveryRetry},
}


def _package_version() -> str:
    try:
        return version("happ-common")
    except PackageNotFoundError:  # run from a source tree without installing
        return "unknown"


def event_schemas() -> dict[str, Any]:
    """The JSON schema of every event and of what they contain, by model name,
    referring to each other under ``#/components/schemas/``; and of the record key
    and headers."""
    models = [m for messages in _MESSAGES.values() for m in messages.values()]
    _, top = models_json_schema(
        [(m, "validation") for m in models], ref_template=_SCHEMAS + "{model}"
    )
    schemas: dict[str, Any] = top["$defs"]
    return {
        **schemas,
        "PipelineHeaders": PIPELINE_HEADERS,
        "DeadLetterHeaders": DEAD_LETTER_HEADERS,
    }


def examples() -> dict[str, BaseModel]:
    """One event per message, made by the models: what the document shows."""
    at = datetime(2026, 5, 4, 12, 0, 0, tzinfo=UTC)
    channel_id, sender_id, message_id = "cm_3f9k2m8q1x7z4w5e", "user_42", "msg_7d1c0e5b9a2f4"
    reply = OutboundReply(
        channel_id=channel_id,
        reply_id=reply_id_for(channel_id, message_id),
        in_reply_to=message_id,
        to=sender_id,
        text="Hi Dmytro! How can I help?",
        metadata={"source": "website"},
        created_at=at + timedelta(seconds=1),
        author=ASSISTANT,
    )
    return {
        "inboundMessage": InboundMessage(
            channel_id=channel_id,
            message_id=message_id,
            sender_id=sender_id,
            sender_name="Dmytro",
            text="Hello!",
            metadata={"source": "website"},
            received_at=at,
            accepted_by="9c4e1f0a7b3d5e2c",
        ),
        "conversationCommand": ConversationCommand(
            type="operator_reply",
            channel_id=channel_id,
            sender_id=sender_id,
            message_id="op_5e0a9c3b7d1f4a2e8c6b0d9f1e3a5c7b",
            operator=Author(type="operator", name="Olena", id="usr_2b4d6f8a"),
            text="Hi, Olena here. Let me check your order.",
            at=at + timedelta(minutes=2),
        ),
        "outboundReply": reply,
        "deliveryRetry": DeliveryRetry(reply=reply, attempt=2, due_at=at + timedelta(seconds=6)),
    }


_MESSAGE_TEXT = {
    "inboundMessage": (
        "A user's message",
        "The ingress publishes it once the webhook is accepted. `type` is `message` (or absent).",
    ),
    "conversationCommand": (
        "What a person did to a conversation",
        "An operator's reply, take over, hand back or close (`type`), from the admin API. "
        "It travels the conversation's partition so the assistant applies it in order "
        "with the user's messages.",
    ),
    "outboundReply": (
        "A reply to deliver",
        "An AI or operator reply, or a notice (`event`), stored by the assistant before it "
        "is published; the admin API publishes a stored one again to resend it "
        "(`resend: true`). `reply_id` is stable across redeliveries and retries.",
    ),
    "deliveryRetry": (
        "The next attempt of a reply",
        "Published by the delivery service after a failed attempt with attempts left "
        "(HAPP_DELIVERY_RETRY_DELAYS); the attempt is not made before `due_at`.",
    ),
}


def _message(name: str, model: type[BaseModel], example: BaseModel) -> dict[str, Any]:
    title, description = _MESSAGE_TEXT[name]
    return {
        "name": model.__name__,
        "title": title,
        "description": description,
        "contentType": _CONTENT_TYPE,
        "headers": {"$ref": _SCHEMAS + "PipelineHeaders"},
        "payload": {"$ref": _SCHEMAS + model.__name__},
        "bindings": _KEYED,
        "examples": [
            {
                "name": name,
                "headers": {"content-type": _CONTENT_TYPE},
                "payload": example.model_dump(mode="json"),
            }
        ],
    }


def _dead_letter_message(topic: str) -> dict[str, Any]:
    return {
        "name": "DeadLetter",
        "title": f"A record of {topic} that can never be handled",
        "description": f"The {topic} record, key and value byte for byte (the value may "
        "not even be JSON: a record that does not decode is parked too), with headers "
        "saying where it came from and why. Listed by GET /api/dead-letters and replayed "
        "onto its topic by the admin API.",
        "contentType": "application/octet-stream",
        "headers": {"$ref": _SCHEMAS + "DeadLetterHeaders"},
        "payload": {"description": f"The original {topic} record's value, unchanged."},
        "bindings": _KEYED,
    }


def _partitioning(topic: str, default_partitions: int) -> dict[str, Any]:
    return {
        "key": "conversation",
        "partitions": "KAFKA_PARTITIONS",
        "defaultPartitions": default_partitions,
        "coPartitionedWith": [t for t in PIPELINE_TOPICS if t != topic],
    }


def _channels(default_partitions: int) -> dict[str, Any]:
    descriptions = {
        INBOUND_MESSAGES: "What users and operators say, in order per conversation. The "
        "assistant decodes each record by its `type`: `message` (or absent) is an "
        "InboundMessage, any other value a ConversationCommand.",
        OUTBOUND_REPLIES: "Replies to deliver, in the order of their conversation.",
        DELIVERY_RETRY: "Scheduled retries of failed deliveries. Read together with "
        "outbound.replies by one consumer (range assignor), partition n of both on the "
        "same member, so a conversation's retry and its later replies meet.",
    }
    channels: dict[str, Any] = {}
    found = examples()
    for topic, messages in _MESSAGES.items():
        channels[_CHANNELS[topic]] = {
            "address": topic,
            "title": topic,
            "description": descriptions[topic]
            + f" Keyed by conversation; KAFKA_PARTITIONS partitions (default "
            f"{default_partitions}), like every pipeline topic.",
            "messages": {
                name: _message(name, model, found[name]) for name, model in messages.items()
            },
            "bindings": {"kafka": {"topic": topic, "bindingVersion": _KAFKA_BINDING}},
            "x-happ-partitioning": _partitioning(topic, default_partitions),
        }
    for topic in PIPELINE_TOPICS:
        dlq = dead_letter_topic(topic)
        channels[_channel_name(dlq)] = {
            "address": dlq,
            "title": dlq,
            "description": f"Dead letters of {topic}: records its consumer can never handle "
            "(they do not decode, or break a rule of their event), parked instead of "
            "stalling their partition.",
            "messages": {"deadLetter": _dead_letter_message(topic)},
            "bindings": {"kafka": {"topic": dlq, "bindingVersion": _KAFKA_BINDING}},
        }
    return channels


# (operation id, service, action, topic, messages, summary): who publishes and who
# consumes each topic. A receive by a consumer service runs in its consumer group.
_OPERATIONS: list[tuple[str, str, str, str, tuple[str, ...], str]] = [
    (
        "ingressSendInboundMessage",
        "ingress",
        "send",
        INBOUND_MESSAGES,
        ("inboundMessage",),
        "The ingress publishes each accepted webhook message, and answers 200 only once "
        "the broker acknowledged it.",
    ),
    (
        "adminSendConversationCommand",
        "admin",
        "send",
        INBOUND_MESSAGES,
        ("conversationCommand",),
        "The admin API publishes what an operator does: reply, take over, hand back, close.",
    ),
    (
        "assistantReceiveInbound",
        "assistant",
        "receive",
        INBOUND_MESSAGES,
        ("inboundMessage", "conversationCommand"),
        "The assistant handles each conversation's records one at a time, in order.",
    ),
    (
        "assistantSendOutboundReply",
        "assistant",
        "send",
        OUTBOUND_REPLIES,
        ("outboundReply",),
        "The assistant publishes each reply or notice once it is stored.",
    ),
    (
        "adminSendResend",
        "admin",
        "send",
        OUTBOUND_REPLIES,
        ("outboundReply",),
        "The admin API's resend publishes a stored reply again (`resend: true`).",
    ),
    (
        "deliveryReceiveOutboundReplies",
        "delivery",
        "receive",
        OUTBOUND_REPLIES,
        ("outboundReply",),
        "The delivery service signs and POSTs each reply to its channel's endpoint, a "
        "conversation's in order.",
    ),
    (
        "deliverySendRetry",
        "delivery",
        "send",
        DELIVERY_RETRY,
        ("deliveryRetry",),
        "The delivery service schedules the next attempt of a failed delivery.",
    ),
    (
        "deliveryReceiveRetries",
        "delivery",
        "receive",
        DELIVERY_RETRY,
        ("deliveryRetry",),
        "The delivery service makes each retry once it is due, in the consumer (and group) "
        "that reads outbound.replies.",
    ),
]
# Who parks the records of each topic it cannot handle.
_DEAD_LETTERED_BY = {
    INBOUND_MESSAGES: "assistant",
    OUTBOUND_REPLIES: "delivery",
    DELIVERY_RETRY: "delivery",
}


def _dead_letter_operations() -> list[tuple[str, str, str, str, tuple[str, ...], str]]:
    ops: list[tuple[str, str, str, str, tuple[str, ...], str]] = []
    for topic, consumer in _DEAD_LETTERED_BY.items():
        dlq, name = dead_letter_topic(topic), _CHANNELS[topic][0].upper() + _CHANNELS[topic][1:]
        ops += [
            (
                f"{consumer}SendDeadLetter{name}",
                consumer,
                "send",
                dlq,
                ("deadLetter",),
                f"The {consumer} service parks a {topic} record it can never handle.",
            ),
            (
                f"adminReceiveDeadLetter{name}",
                "admin",
                "receive",
                dlq,
                ("deadLetter",),
                "The admin API lists dead letters (GET /api/dead-letters), reading the "
                "topic without a consumer group.",
            ),
            (
                f"adminSendReplay{name}",
                "admin",
                "send",
                topic,
                tuple(_MESSAGES[topic]),
                f"The admin API replays a dead letter onto {topic}, key and value "
                "unchanged, with the header happ-replayed-from.",
            ),
        ]
    return ops


def _channel_name(topic: str) -> str:
    if topic in _CHANNELS:
        return _CHANNELS[topic]
    return _CHANNELS[topic.removesuffix(".dlq")] + "DeadLetters"


def _operations() -> dict[str, Any]:
    operations: dict[str, Any] = {}
    for op_id, service, action, topic, messages, summary in [
        *_OPERATIONS,
        *_dead_letter_operations(),
    ]:
        channel = _channel_name(topic)
        operation: dict[str, Any] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{channel}"},
            "summary": summary,
            "messages": [{"$ref": f"#/channels/{channel}/messages/{m}"} for m in messages],
            "tags": [{"name": service}],
        }
        if action == "receive" and service in GROUP_IDS:
            group = {
                "type": "string",
                "default": GROUP_IDS[service],
                "description": f"HAPP_{service.upper()}_GROUP_ID",
            }
            operation["bindings"] = {"kafka": {"groupId": group, "bindingVersion": _KAFKA_BINDING}}
        operations[op_id] = operation
    return operations


@cache
def asyncapi_document() -> dict[str, Any]:
    """The AsyncAPI 3.0 document of HAPP's topics. Do not mutate the result."""
    partitions = InfraSettings.model_fields["kafka_partitions"].default
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "HAPP Custom Messenger events",
            "version": _package_version(),
            "description": "The events HAPP's services exchange over Kafka, generated from "
            "happ_common.events (make asyncapi). Every record is keyed by conversation "
            "(`<channel_id>\\n<sender_id>`), so a conversation's records share a partition "
            "and keep their order. inbound.messages, outbound.replies and delivery.retry are "
            "co-partitioned: each must have KAFKA_PARTITIONS partitions (default "
            f"{partitions}), so a key lands on the same partition number in every topic; "
            "the assistant and delivery services refuse to start otherwise "
            "(happ_common.topics.check_topic_layout). Every publish waits for acks=all. "
            "Values are JSON (`v`: the event's version, 1); unknown fields are ignored. "
            "Each `<topic>.dlq` holds the records of its topic that can never be handled.",
            "tags": [{"name": name, "description": text} for name, text in _SERVICES.items()],
        },
        "defaultContentType": _CONTENT_TYPE,
        "servers": {
            "kafka": {
                "host": "{bootstrapServers}",
                "protocol": "kafka",
                "description": "The Kafka cluster (or the embedded broker `make run` starts).",
                "variables": {
                    "bootstrapServers": {
                        "default": InfraSettings.model_fields["kafka_bootstrap_servers"].default,
                        "description": "KAFKA_BOOTSTRAP_SERVERS",
                    }
                },
            }
        },
        "channels": _channels(partitions),
        "operations": _operations(),
        "components": {"schemas": event_schemas()},
    }


def render() -> str:
    """The document as ``docs/asyncapi.json`` holds it."""
    return json.dumps(asyncapi_document(), indent=2, ensure_ascii=False) + "\n"


def asyncapi_router() -> APIRouter:
    """``GET /asyncapi.json``, for the services that consume the topics."""
    router = APIRouter(tags=["events"])

    @router.get(
        ASYNCAPI_PATH,
        summary="AsyncAPI 3.0 document of the Kafka topics",
        description="The events on inbound.messages, outbound.replies, delivery.retry and "
        "their dead-letter topics: payload schemas, record key, headers, who publishes and "
        "who consumes each. The same document as docs/asyncapi.json.",
        response_model=None,
        responses={200: {"content": {"application/json": {"schema": {"type": "object"}}}}},
    )
    async def asyncapi() -> JSONResponse:
        return JSONResponse(asyncapi_document())

    return router
