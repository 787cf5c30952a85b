"""How many keys a consumer works on at once, lowered while the database is slow.

A consumer may hold thousands of records: with a slow model most of them wait
on the network, and that is cheap. But while a backlog drains, each of them
becomes database work at once, and the database's queue grows long: the
webhook's own writes then wait behind it, and the integrator waits for the
webhook (docs/benchmarks.md measures both). So the consumer works on fewer keys
(conversations) while its commands' round trips (``happ_common.db_latency``)
are above a target, and on more again, up to its ``max_in_flight``, while they
are below it and the keys it may work on are in use: decrease by a factor,
increase by a step, checked twice a second. Records queued behind a key do not
count (``max_in_flight`` still bounds them): at a low limit, a conversation with
many messages waiting does not take the others' places. Signals from elsewhere
(a model's or an endpoint's latency) are deliberately not used: a slow tenant
must not shrink everyone's share.
"""

from __future__ import annotations

from collections.abc import Callable

# A consumer keeps at least this many (or its ceiling, if lower): enough to
# keep batches forming and the database busy, never starved by a slow reading.
FLOOR = 64
_DECREASE = 0.7
_INTERVAL_S = 0.5


class InFlightLimit:
    def __init__(
        self,
        ceiling: int,
        *,
        latency_ms: Callable[[], float | None] | None,
        target_ms: float,
    ) -> None:
        self.ceiling = ceiling
        self.floor = min(FLOOR, ceiling)
        self.current = ceiling
        self._latency_ms = latency_ms
        self._target_ms = target_ms
        self._next_check = 0.0

    def update(self, in_use: int, now: float) -> int:
        """The limit to apply now, given how much of it is in use (``now``: monotonic)."""
        if self._latency_ms is None or self._target_ms <= 0 or now < self._next_check:
            return self.current
        self._next_check = now + _INTERVAL_S
        latency = self._latency_ms()
        if latency is None:
            return self.current
        if latency > self._target_ms:
            self.current = max(self.floor, int(self.current * _DECREASE))
        elif in_use >= self.current * 0.8:
            self.current = min(self.ceiling, self.current + max(8, self.current // 8))
        return self.current
