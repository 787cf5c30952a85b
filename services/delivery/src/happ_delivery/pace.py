"""The pace of POSTs to a channel's endpoint: its caps, and the pauses it asks for.

Caps (``outgoing_rate_per_second``, ``outgoing_max_concurrency``) hold for all
delivery members together without any coordination between them: each member
takes the share of a cap that its share of the partitions is (``PartitionShare``),
and the shares of the live members add up to one. A channel whose replies fall
mostly in one member's partitions therefore gets less than its cap, never more.
A member spaces its sends at its share of the rate (``RateCaps``); the
concurrency share lives in ``happ_delivery.slots``.

Pauses: an endpoint that answers 429 or 503 with ``Retry-After`` is given
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
import math
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


class PartitionShare:
    """This member's part of the pipeline's partitions, hence of every cap."""

    def __init__(self, total_partitions: int) -> None:
        self._total = total_partitions
        self._owned: set[int] = set()

    def assigned(self, partitions: set[int]) -> None:
        self._owned |= partitions

    def revoked(self, partitions: set[int]) -> None:
        self._owned -= partitions

    @property
    def fraction(self) -> float:
        # Never zero: a record handled here belongs to a partition held here.
        return max(len(self._owned), 1) / self._total

    def of_count(self, cap: int) -> int:
        """This member's part of a cap on requests at once: at least one, so a
        cap below the number of members is exceeded by design rather than stuck."""
        return max(1, math.floor(cap * self.fraction))


class RateCaps:
    """Spaces a channel's POSTs at its share of the rate: each send reserves the
    next free instant, ``1 / rate`` after the previous one.

    Taken while holding the channel's sending slot (``SendSlots.hold``), so the
    waiters here are at most the channel's concurrency, and a send that passed
    its instant cannot queue again behind the slot and go out in a burst later.
    Reservations are dropped when partitions are revoked (``forget``): their
    waiters are abandoned, and must not push the records that come back (here
    or elsewhere) further out."""

    def __init__(self) -> None:
        self._next: dict[str, float] = {}

    def forget(self) -> None:
        self._next.clear()

    def due(self, channel_id: str) -> bool:
        """Whether the channel's next instant has come, without taking it."""
        return self._next.get(channel_id, 0.0) <= time.monotonic()

    def free_now(self, channel_id: str, per_second: float) -> bool:
        """Takes the channel's next instant if it has come; for a send that would
        rather be dropped than wait (a typing event)."""
        now = time.monotonic()
        if self._next.get(channel_id, 0.0) > now:
            return False
        self._next[channel_id] = now + 1.0 / per_second
        return True

    async def take(self, channel_id: str, per_second: float, revoked: asyncio.Event) -> None:
        if not still_owned():
            # Revoked already (its event may be a fresh one nobody will set).
            raise Abandoned(channel_id)
        now = time.monotonic()
        at = max(now, self._next.get(channel_id, 0.0))
        self._next[channel_id] = at + 1.0 / per_second
        if len(self._next) > _RATE_ENTRIES_KEPT:
            # Only channels sent to within the last moment matter.
            self._next = {c: t for c, t in self._next.items() if t > now}
        if at <= now:
            return
        async with parked():
            try:
                await asyncio.wait_for(revoked.wait(), at - now)
            except TimeoutError:
                pass
            else:
                raise Abandoned(channel_id)
        if not still_owned():
            raise Abandoned(channel_id)


_RATE_ENTRIES_KEPT = 1024
