"""What the assistant reads: ``inbound.messages`` (a user's message, or what an
operator did), keyed by conversation, each event handed to the service with its
partition (the service keeps conversations in memory per partition it owns)."""

from __future__ import annotations

from happ_assistant.service import AssistantService
from happ_common.events import INBOUND_EVENT, ConversationCommand, InboundMessage
from happ_common.log_context import bind_message
from happ_common.subscriptions import Origin, Subscriptions
from happ_common.topics import INBOUND_MESSAGES


def subscriptions(service: AssistantService) -> Subscriptions:
    async def inbound(event: InboundMessage | ConversationCommand, origin: Origin) -> None:
        bind_message(
            channel_id=event.channel_id,
            conversation_id=event.sender_id,
            message_id=event.message_id,
        )
        await service.handle(event, (origin.topic, origin.partition))

    reads = Subscriptions()
    reads.subscribe(
        INBOUND_MESSAGES, INBOUND_EVENT, inbound, name="message or conversation command"
    )
    return reads
