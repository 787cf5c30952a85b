"""The consumer's handler: decode the record (a user's message, or what an operator
did), hand it to the service with its partition (the service keeps conversations
in memory per partition it owns)."""

from __future__ import annotations

from happ_assistant.service import AssistantService
from happ_common.events import INBOUND_EVENT
from happ_common.log_context import bind_message
from happ_common.pipeline import Handler, Record, decode_as


def inbound_handler(service: AssistantService) -> Handler:
    async def handle(record: Record) -> None:
        event = decode_as(record, INBOUND_EVENT, "message or conversation command")
        bind_message(
            channel_id=event.channel_id,
            conversation_id=event.sender_id,
            message_id=event.message_id,
        )
        await service.handle(event, (record.topic, record.partition))

    return handle
