"""Pauses: an endpoint that answers 429 or 503 with ``Retry-After`` is given
that time, for every reply of its channel, before HAPP POSTs to it again.

The pause is the channel's, not the reply's: the conversation that met it
waits for its retry (its gate is closed like any retry's), and the channel's
other conversations wait here before they take a sending slot, parked, so they
use no share of the consumer's budget and no connection meanwhile. Other
channels never wait on it. Each delivery member keeps its own pauses: a member
learns of one from its own POSTs, so with several members an endpoint may see
one request per member before all of them hold back.
"""

from __future__ import annotations

import asyncio
import time

from prometheus_client import Counter, Gauge

from happ_common.pipeline import Abandoned, parked, still_owned

PAUSES = Counter(
    "happ_delivery_pauses_total",
    "Retry-After answers (429 or 503) honoured as a pause of the channel's deliveries",
)
PAUSED_CHANNELS = Gauge(
    "happ_delivery_paused_channels", "Channels whose deliveries are paused by a Retry-After"
)


class ChannelPauses:
    def __init__(self) -> None:
        self._until: dict[str, float] = {}

    def pause(self, channel_id: str, seconds: float) -> None:
        """Hold the channel's POSTs for ``seconds`` (a longer pause already set stays)."""
        PAUSES.inc()
        now = time.monotonic()
        until = now + seconds
        if until > self._until.get(channel_id, 0.0):
            self._until[channel_id] = until
        # Expired pauses go as new ones come: the map holds only channels that
        # asked to wait recently.
        self._until = {c: u for c, u in self._until.items() if u > now}
        PAUSED_CHANNELS.set(len(self._until))

    def remaining(self, channel_id: str) -> float:
        until = self._until.get(channel_id)
        if until is None:
            return 0.0
        left = until - time.monotonic()
        if left <= 0:
            del self._until[channel_id]
            PAUSED_CHANNELS.set(len(self._until))
            return 0.0
        return left

    async def wait(self, channel_id: str, revoked: asyncio.Event) -> None:
        """Return once the channel is not paused; raises ``Abandoned`` as soon as
        ``revoked`` is set (the record's partition is leaving this member, whose
        rebalance must not wait out someone's pause: the next owner sends it)."""
        if self.remaining(channel_id) <= 0:
            return
        async with parked():
            # Another 429 may lengthen the pause meanwhile: waited again.
            while (left := self.remaining(channel_id)) > 0:
                try:
                    await asyncio.wait_for(revoked.wait(), left)
                except TimeoutError:
                    continue
                raise Abandoned(channel_id)
        if not still_owned():
            raise Abandoned(channel_id)
