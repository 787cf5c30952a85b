"""First attempts' request-log entries leave their delivery states with the log.

A reply's first attempt is logged inside its delivery state
(``happ_common.deliveries``), which outlives the request log: the state is what
a redelivered reply is checked against. The entry, its bodies above all, must
go when the log's other entries do (``HAPP_REQUEST_LOG_RETENTION_DAYS``, a TTL
index on ``request_log``), so this removes it from states whose entry is older,
channel by channel through the index the admin lists them by. Every member
does it; the removals are idempotent, and a round that finds nothing costs one
indexed query per channel.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from prometheus_client import Counter

from happ_common.channels import ChannelRepository
from happ_common.periodic import Periodic
from happ_delivery.repository import DeliveryRepository

log = logging.getLogger(__name__)

EXPIRED = Counter(
    "happ_delivery_first_attempt_entries_expired_total",
    "First attempts' request-log entries removed from their delivery states at the "
    "request log's retention",
)


class FirstAttemptRetention(Periodic):
    def __init__(
        self,
        channels: ChannelRepository,
        repo: DeliveryRepository,
        *,
        retention_days: int,
        interval_s: float = 3600.0,
    ) -> None:
        super().__init__("first-attempt-retention", self.sweep, interval_s)
        self._channels = channels
        self._repo = repo
        self._retention = timedelta(days=retention_days)

    async def sweep(self) -> int:
        """Remove the entries past retention; how many were removed."""
        before = datetime.now(UTC) - self._retention
        removed = 0
        for channel_id in await self._channels.ids():
            removed += await self._repo.forget_first_attempts(channel_id, before)
        if removed:
            EXPIRED.inc(removed)
            log.info("removed %d first attempts' request-log entries past retention", removed)
        return removed
