"""The consumer's handler: decode the record, hand it to the service with its partition
(the service keeps conversations in memory per partition it owns)."""

from __future__ import annotations

from happ_assistant.service import AssistantService
from happ_common.events import InboundMessage
from happ_common.pipeline import Handler, Record, decode


def inbound_handler(service: AssistantService) -> Handler:
    async def handle(record: Record) -> None:
        await service.handle(decode(record, InboundMessage), (record.topic, record.partition))

    return handle
