"""The consumer's side: one pipeline reads both topics, co-partitioned.

Replies are keyed by conversation (one at a time, in order). Retries are keyed
by reply: a retry sleeping until it is due must not sit in the queue of the
conversation it is holding back, or neither could move.
"""

from __future__ import annotations

from aiokafka import TopicPartition

from happ_common.events import DeliveryRetry, OutboundReply
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
            await service.deliver_retry(decode(record, DeliveryRetry), record.partition)
        else:
            await service.deliver_new(decode(record, OutboundReply), record.partition)

    return handle


def on_assigned(service: DeliveryService) -> PartitionsCallback:
    async def assigned(partitions: set[TopicPartition]) -> None:
        await service.restore_gates({tp.partition for tp in partitions})

    return assigned


def on_revoked(service: DeliveryService) -> PartitionsCallback:
    def revoked(partitions: set[TopicPartition]) -> None:
        service.forget({tp.partition for tp in partitions})

    return revoked
