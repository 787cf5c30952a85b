"""The consumer's side: one pipeline reads both topics, co-partitioned.

Replies are keyed by conversation (one at a time, in order). Each retry runs on
its own: a retry sleeping until it is due must not sit in the queue of the
conversation it is holding back, or neither could move.
"""

from __future__ import annotations

from aiokafka import TopicPartition

from happ_common.events import TYPING, DeliveryRetry, OutboundReply
from happ_common.log_context import bind_message
from happ_common.pipeline import PartitionsCallback
from happ_common.subscriptions import Origin, Subscriptions, each_record
from happ_common.topics import DELIVERY_RETRY, OUTBOUND_REPLIES
from happ_delivery.service import DeliveryService


def subscriptions(service: DeliveryService) -> Subscriptions:
    async def new(reply: OutboundReply, origin: Origin) -> None:
        _bind(reply)
        if reply.event == TYPING:
            await service.deliver_typing(reply, origin.partition)
        else:
            await service.deliver_new(reply, origin.partition)

    async def retry(retry: DeliveryRetry, origin: Origin) -> None:
        _bind(retry.reply)
        await service.deliver_retry(retry, origin.partition)

    reads = Subscriptions()
    reads.subscribe(OUTBOUND_REPLIES, OutboundReply, new)
    reads.subscribe(DELIVERY_RETRY, DeliveryRetry, retry, key=each_record)
    return reads


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
