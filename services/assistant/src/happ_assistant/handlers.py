"""The consumer's handler: decode the record, hand it to the service with its partition
(the service keeps conversations in memory per partition it owns)."""

from __future__ import annotations

import logging

from pydantic import ValidationError

from happ_assistant.service import AssistantService
from happ_common.events import InboundMessage
from happ_common.pipeline import Handler, Record

log = logging.getLogger(__name__)


def inbound_handler(service: AssistantService) -> Handler:
    async def handle(record: Record) -> None:
        try:
            msg = InboundMessage.model_validate_json(record.value or b"")
        except ValidationError:
            # Not ours to fix by retrying: log it with its coordinates and move on.
            log.error(
                "undecodable record %s[%d]@%d skipped",
                record.topic,
                record.partition,
                record.offset,
            )
            return
        await service.handle(msg, (record.topic, record.partition))

    return handle
