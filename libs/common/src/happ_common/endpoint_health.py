"""Whether a channel's endpoint keeps failing, and the automatic disable.

Tracked on the channel's document, because every delivery replica and the
admin must agree on it and it outlives any process:

* ``endpoint_failing_since``: the time of the first failed attempt with no
  successful one after it; None while the endpoint works.
* ``deliveries_disabled``: set once that run of failures has lasted
  ``HAPP_DELIVERY_AUTO_DISABLE_AFTER_HOURS``; the delivery service then ends
  the channel's replies ``failed`` (``DELIVERY_DISABLED``) without a POST, so
  they are kept and a bulk recovery sends them once the endpoint is fixed.
  A connect (admin) clears both.

* ``replies_backlogged_until``: a short lease a delivery member renews while
  the channel's replies waiting in its memory exceed their share
  (``happ_delivery.backlog``); until it runs out the ingress answers the
  channel's webhook 429, so an endpoint slower than its sender pushes back on
  that sender alone.

The delivery service writes only when the endpoint's state changes (a first
failure, a first success after failures, the disable), never per attempt: it
reads the fields from its channel cache and remembers its own writes for the
cache's lifetime (``happ_delivery.health``). Each write is conditional on
the value it replaces, so replicas racing on the same change write it once.
"""

from __future__ import annotations

from datetime import datetime

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from happ_common.channels import DeliveriesDisabled
from happ_common.mongo import CHANNELS, Document

# What a connect resets: the endpoint gets a fresh start.
CLEARED: Document = {"endpoint_failing_since": None, "deliveries_disabled": None}
DISABLED_ERROR_CODE = "DELIVERY_DISABLED"


class EndpointHealthRepository:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._channels = db[CHANNELS]

    async def mark_failing(self, channel_id: str, at: datetime) -> datetime | None:
        """Record a failure; the ``endpoint_failing_since`` now in effect (``at``,
        or the earlier time another replica recorded). None: no such channel."""
        doc = await self._channels.find_one_and_update(
            {"_id": channel_id, "endpoint_failing_since": None},
            {"$set": {"endpoint_failing_since": at}},
            projection={"endpoint_failing_since": 1},
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:
            doc = await self._channels.find_one({"_id": channel_id}, {"endpoint_failing_since": 1})
        since = doc.get("endpoint_failing_since") if doc else None
        return since if isinstance(since, datetime) else None

    async def mark_ok(self, channel_id: str) -> None:
        await self._channels.update_one(
            {"_id": channel_id, "endpoint_failing_since": {"$ne": None}},
            {"$set": {"endpoint_failing_since": None}},
        )

    async def disable(self, channel_id: str, disabled: DeliveriesDisabled) -> bool:
        """Turn the channel's deliveries off, unless its run of failures changed
        meanwhile (a success cleared it) or it is already off; True if this call did."""
        result = await self._channels.update_one(
            {
                "_id": channel_id,
                "endpoint_failing_since": disabled.failing_since,
                "deliveries_disabled": None,
            },
            {"$set": {"deliveries_disabled": disabled.model_dump()}},
        )
        return result.modified_count == 1

    async def mark_backlogged(self, channel_id: str, until: datetime) -> None:
        """Extend the channel's backlog lease to ``until`` (never shortens one
        another member holds for longer)."""
        await self._channels.update_one(
            {"_id": channel_id}, {"$max": {"replies_backlogged_until": until}}
        )

    async def count_disabled(self) -> int:
        return await self._channels.count_documents({"deliveries_disabled": {"$ne": None}})
