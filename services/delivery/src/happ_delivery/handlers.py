"""The consumer's side: one pipeline reads both topics, co-partitioned.

Replies are keyed by conversation (one at a time, in order). Retries are keyed
by reply: a retry sleeping until it is due must not sit in the queue of the
conversation it is holding back, or neither could move.
"""

from __future__ import annotations

from aiokafka import TopicPartition

from happ_common.events import TYPING, DeliveryRetry, OutboundReply
from happ_common.log_context import bind_message
from happ_common.pipeline import Handler, PartitionsCallback, Record, decode
from happ_common.topics import DELIVERY_RETRY
from happ_delivery.service import DeliveryService


def pipeline_key(record: Record) -> object:
    if record.topic == DELIVERY_RETRY:
        return (DELIVERY_RETRY, record.partition, record.offset)
    return record.key


def delivery_handler(service: DeliveryService) -> Handler:
    async def handle(record: Record) -> None:
        if record.topic == DELIVERY_RETRY:
            retry = decode(record, DeliveryRetry)
            _bind(retry.reply)
            await service.deliver_retry(retry, record.partition)
        else:
            reply = decode(record, OutboundReply)
            _bind(reply)
            if reply.event == TYPING:
                await service.deliver_typing(reply, record.partition)
            else:
                await service.deliver_new(reply, record.partition)

    return handle


def _bind(reply: OutboundReply) -> None:
    bind_message(
        channel_id=reply.channel_id,
        conversation_id=reply.to,
        message_id=reply.in_reply_to,
        reply_id=reply.reply_id,
    )


def on_assigned(service: DeliveryService) -> PartitionsCallback:
    async def assigned(partitions: set[TopicPartition]) -> None:
        await service.restore_gates({tp.partition for tp in partitions})

    return assigned


def on_revoked(service: DeliveryService) -> PartitionsCallback:
    def revoked(partitions: set[TopicPartition]) -> None:
        service.forget({tp.partition for tp in partitions})

    return revoked
