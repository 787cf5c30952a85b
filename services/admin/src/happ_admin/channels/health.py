"""``happ_channels_deliveries_disabled``: how many channels have their
deliveries turned off (``happ_common.endpoint_health``), read from the
database every ``interval_s``. A state, not an event, so the alert
(``HappChannelDeliveriesDisabled``) fires for as long as a channel stays off
and clears when it is connected again; every admin replica reports the same
number (the alert takes the max)."""

from __future__ import annotations

from prometheus_client import Gauge

from happ_common.endpoint_health import EndpointHealthRepository
from happ_common.periodic import Periodic

DISABLED = Gauge(
    "happ_channels_deliveries_disabled",
    "Channels whose deliveries were turned off after their endpoint failed continuously",
)


class DisabledChannelsGauge(Periodic):
    def __init__(self, repo: EndpointHealthRepository, interval_s: float = 30.0) -> None:
        super().__init__("disabled-channels-gauge", self._count, interval_s)
        self._repo = repo

    async def _count(self) -> None:
        # A failed count (the database away) keeps the last value.
        DISABLED.set(await self._repo.count_disabled())
