"""The consumer's handler: one pipeline reads both topics, co-partitioned."""

from __future__ import annotations

import logging

from pydantic import ValidationError

from happ_common.events import DeliveryRetry, OutboundReply
from happ_common.pipeline import Handler, Record
from happ_common.topics import DELIVERY_RETRY
from happ_delivery.service import DeliveryService

log = logging.getLogger(__name__)


def delivery_handler(service: DeliveryService) -> Handler:
    async def handle(record: Record) -> None:
        try:
            if record.topic == DELIVERY_RETRY:
                retry = DeliveryRetry.model_validate_json(record.value or b"")
            else:
                reply = OutboundReply.model_validate_json(record.value or b"")
        except ValidationError:
            log.error(
                "undecodable record %s[%d]@%d skipped",
                record.topic,
                record.partition,
                record.offset,
            )
            return
        if record.topic == DELIVERY_RETRY:
            await service.deliver_retry(retry)
        else:
            await service.deliver_new(reply)

    return handle
