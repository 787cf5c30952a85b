"""First attempts' request-log entries leave their delivery states with the log
(``happ_common.kept_log_retention``)."""

from __future__ import annotations

from prometheus_client import Counter
from pymongo.asynchronous.database import AsyncDatabase

from happ_common.channels import ChannelRepository
from happ_common.deliveries import FIRST_ATTEMPT
from happ_common.kept_log_retention import KeptLogRetention
from happ_common.mongo import DELIVERIES, Document

EXPIRED = Counter(
    "happ_delivery_first_attempt_entries_expired_total",
    "First attempts' request-log entries removed from their delivery states at the "
    "request log's retention",
)


def first_attempt_retention(
    db: AsyncDatabase[Document], *, retention_days: int
) -> KeptLogRetention:
    return KeptLogRetention(
        ChannelRepository(db), db[DELIVERIES], FIRST_ATTEMPT, EXPIRED, retention_days=retention_days
    )
