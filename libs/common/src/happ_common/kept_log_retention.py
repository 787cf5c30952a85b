"""Request-log entries kept inside other documents leave them with the log.

Two entries are kept on documents that outlive the request log, one write
instead of two (issue #14): a reply's first attempt on its delivery state
(``happ_common.deliveries``), an accepted webhook on the user's message it
brought (``happ_common.messages``). The entry, its bodies above all, must go
when the log's other entries do (``HAPP_REQUEST_LOG_RETENTION_DAYS``, a TTL
index on ``request_log``), so this removes it from documents whose entry is
older, channel by channel through the index the admin lists them by. The
owner of each collection runs it on every member; the removals are
idempotent, and a round that finds nothing costs one indexed query per channel.
Until a round runs, the admin hides such entries
(``happ_admin.request_log.repository``).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from prometheus_client import Counter
from pymongo.asynchronous.database import AsyncDatabase

from happ_common.channels import ChannelRepository
from happ_common.mongo import KEPT_SINCE, Document
from happ_common.periodic import Periodic

log = logging.getLogger(__name__)

EXPIRED = Counter(
    "happ_kept_log_entries_expired_total",
    "Request-log entries kept inside other documents, removed from them at the request "
    "log's retention, by where they were kept (collection.field)",
    ["kept_in"],
)


class KeptLogRetention(Periodic):
    def __init__(
        self,
        db: AsyncDatabase[Document],
        collection: str,
        field: str,
        *,
        retention_days: int,
        interval_s: float = 3600.0,
    ) -> None:
        super().__init__(f"{collection}-{field}-retention", self.sweep, interval_s)
        self._channels = ChannelRepository(db)
        self._collection = db[collection]
        self._field = field
        self._expired = EXPIRED.labels(kept_in=f"{collection}.{field}")
        self._retention = timedelta(days=retention_days)

    async def sweep(self) -> int:
        """Remove the entries past retention; how many were removed."""
        before = datetime.now(UTC) - self._retention
        removed = 0
        for channel_id in await self._channels.ids():
            result = await self._collection.update_many(
                {
                    "channel_id": channel_id,
                    # Bounded below too: the partial index's range (mongo.py).
                    f"{self._field}.created_at": {"$gte": KEPT_SINCE, "$lt": before},
                },
                {"$unset": {self._field: ""}},
            )
            removed += result.modified_count
        if removed:
            self._expired.inc(removed)
            log.info(
                "removed %d request-log entries past retention from %s",
                removed,
                self._collection.name,
            )
        return removed
