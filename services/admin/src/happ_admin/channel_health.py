"""``happ_channels_deliveries_disabled``: how many channels have their
deliveries turned off (``happ_common.endpoint_health``), read from the
database every ``interval_s``. A state, not an event, so the alert
(``HappChannelDeliveriesDisabled``) fires for as long as a channel stays off
and clears when it is connected again; every admin replica reports the same
number (the alert takes the max)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from prometheus_client import Gauge

from happ_common.endpoint_health import EndpointHealthRepository

log = logging.getLogger(__name__)

DISABLED = Gauge(
    "happ_channels_deliveries_disabled",
    "Channels whose deliveries were turned off after their endpoint failed continuously",
)


class DisabledChannelsGauge:
    def __init__(self, repo: EndpointHealthRepository, interval_s: float = 30.0) -> None:
        self._repo = repo
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            try:
                DISABLED.set(await self._repo.count_disabled())
            except Exception as exc:  # the database is away: keep the last value
                log.warning("counting channels with deliveries off failed: %s", exc)
            await asyncio.sleep(self._interval_s)
