"""Accepted webhooks' request-log entries leave the user's messages they are
kept on with the log (``happ_common.kept_log_retention``)."""

from __future__ import annotations

from prometheus_client import Counter
from pymongo.asynchronous.database import AsyncDatabase

from happ_common.channels import ChannelRepository
from happ_common.kept_log_retention import KeptLogRetention
from happ_common.messages import ACCEPTED_REQUEST
from happ_common.mongo import MESSAGES, Document

EXPIRED = Counter(
    "happ_ingress_accepted_entries_expired_total",
    "Accepted webhooks' request-log entries removed from their user messages at the "
    "request log's retention",
)


def accepted_request_retention(
    db: AsyncDatabase[Document], *, retention_days: int
) -> KeptLogRetention:
    return KeptLogRetention(
        ChannelRepository(db),
        db[MESSAGES],
        ACCEPTED_REQUEST,
        EXPIRED,
        retention_days=retention_days,
    )
