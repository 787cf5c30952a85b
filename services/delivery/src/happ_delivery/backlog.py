"""A channel whose replies pile up in this member gets its new messages refused.

Replies wait in the member's memory, parked in the pipeline, behind a closed
gate (a retry), a Retry-After pause or the channel's outgoing pace. A channel
whose messages arrive faster than its endpoint takes them (an outgoing cap of
1/s under an incoming limit of 100/s, an endpoint asking for five-minute
pauses) would otherwise grow until the member's whole parked budget is full,
and fetching then pauses for every channel: one tenant slowing all of them.

So each channel may hold at most ``max_parked_bytes_per_channel`` of that
budget. Over it, the member marks the channel backlogged on its document with
a short lease (``replies_backlogged_until``), renewed while the channel stays
above half its share; until the lease runs out the ingress answers the
channel's webhook 429 ``RATE_LIMITED`` with ``Retry-After``. The pressure goes
back to the one integrator sending faster than its endpoint receives, through
the answer its client already handles, and nothing accepted is lost: what was
accepted before the lease took effect is delivered at the channel's pace.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from prometheus_client import Counter, Gauge

from happ_common.endpoint_health import EndpointHealthRepository
from happ_common.periodic import Periodic

log = logging.getLogger(__name__)

BACKLOGGED = Gauge(
    "happ_delivery_backlogged_channels",
    "Channels whose waiting replies exceed their share of this member's parked budget "
    "(their webhook answers 429)",
)
BACKLOG_EVENTS = Counter(
    "happ_delivery_channel_backlogs_total",
    "Times a channel's waiting replies went over their share of the parked budget",
)


class BacklogGuard(Periodic):
    def __init__(
        self,
        repo: EndpointHealthRepository,
        parked_by_channel: Callable[[], dict[str, int]],
        *,
        max_bytes_per_channel: int,
        lease_s: float,
    ) -> None:
        # A new backlog is caught within a second, and a lease is renewed with
        # half of it left (``_held``), not every round. A write that fails (the
        # database away) is made by the next round; meanwhile a lease may run out
        # and the webhook accept a little more, which the budget absorbs.
        super().__init__("backlog-guard", self.check, min(1.0, lease_s / 4))
        self._repo = repo
        self._parked = parked_by_channel
        self._max = max_bytes_per_channel
        self._lease = timedelta(seconds=lease_s)
        # Channels over their share, and when this member's lease on each ends
        # (monotonic), so it is renewed before it runs out, not every tick.
        self._held: dict[str, float] = {}

    async def check(self) -> None:
        parked = self._parked()
        for channel_id in list(self._held):
            if parked.get(channel_id, 0) < self._max // 2:
                del self._held[channel_id]
                log.info("channel %s: waiting replies back under their share", channel_id)
        now = time.monotonic()
        for channel_id, size in parked.items():
            if channel_id not in self._held:
                if size < self._max:
                    continue
                BACKLOG_EVENTS.inc()
                log.warning(
                    "channel %s: %d bytes of replies wait for its endpoint, over its share "
                    "of %d: its webhook answers 429 until they drain",
                    channel_id,
                    size,
                    self._max,
                )
                self._held[channel_id] = 0.0
            if self._held[channel_id] - now < self._lease.total_seconds() / 2:
                try:
                    await self._repo.mark_backlogged(channel_id, datetime.now(UTC) + self._lease)
                except Exception as exc:
                    # The next round tries again; the other channels go on.
                    log.warning("channel %s: backlog lease not written: %s", channel_id, exc)
                    continue
                self._held[channel_id] = now + self._lease.total_seconds()
        BACKLOGGED.set(len(self._held))
