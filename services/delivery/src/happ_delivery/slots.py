"""Sending slots: one tenant's slow or dead endpoint cannot take every connection.

Each POST holds a slot of its channel, of its endpoint's host and of the
process, taken in that order (so no two senders wait on each other in a cycle)
before its attempt's timeout starts: waiting for a connection is not part of
the attempt and never uses one up. The host and process limits match the HTTP
client's pool, so the pool itself never makes a request wait. A sender waiting
for a slot is ``parked`` in the pipeline: it holds no share of the consumer's
budget meanwhile, and one whose partition moved meanwhile lets go rather
than send.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit

from prometheus_client import Gauge, Histogram

from happ_common.pipeline import Abandoned, parked, still_owned

WAITING = Gauge(
    "happ_delivery_connection_waiting",
    "Attempts waiting for a sending slot (their channel's, their host's or the process's)",
)
WAIT_TIME = Histogram(
    "happ_delivery_connection_wait_seconds",
    "Time an attempt waited for a sending slot before its timeout started",
    buckets=(0.001, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60),
)


class SlotWaitExpired(Exception):
    """No slot came within the wait allowed (a typing event's): nothing was sent."""


class _Limits:
    """Semaphores by name, dropped when nobody holds or waits for one."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._sems: dict[str, tuple[asyncio.Semaphore, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, name: str, limit: int | None = None) -> AsyncIterator[None]:
        # Keyed by the limit too: a changed limit applies to the next request at
        # once (the few holding the old one finish their POST).
        limit = limit or self.limit
        key = f"{name}\n{limit}"
        sem, users = self._sems.setdefault(key, (asyncio.Semaphore(limit), [0]))
        users[0] += 1
        try:
            async with sem:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._sems[key]


class SendSlots:
    def __init__(self, *, per_channel: int, per_host: int, total: int) -> None:
        self._channels = _Limits(per_channel)
        self._hosts = _Limits(per_host)
        self._total = asyncio.Semaphore(total)

    @property
    def per_channel(self) -> int:
        return self._channels.limit

    @contextlib.asynccontextmanager
    async def hold(
        self,
        channel_id: str,
        url: str,
        channel_limit: int | None = None,
        paced: Callable[[], Awaitable[None]] | None = None,
        max_wait_s: float | None = None,
    ) -> AsyncIterator[None]:
        """``channel_limit``: the channel's own cap on requests at once, if below
        the service's per-channel limit. ``paced``: waits for the channel's turn
        under its rate, between its own slot and the host's and process's (so a
        channel waiting for its turn holds no slot another channel needs).
        ``max_wait_s``: raise ``SlotWaitExpired`` rather than wait longer (None:
        as long as it takes)."""
        host = urlsplit(url).netloc.lower()
        stack = contextlib.AsyncExitStack()
        started = time.perf_counter()
        WAITING.inc()
        try:
            deadline = asyncio.timeout(max_wait_s)
            try:
                async with deadline:
                    async with parked():
                        await stack.enter_async_context(
                            self._channels.hold(channel_id, channel_limit)
                        )
                        if paced is not None:
                            await paced()
                    # The host's and the process's slots are every channel's:
                    # waiting for them is not this channel's backlog
                    # (happ_delivery.backlog), or a busy neighbour would get a
                    # healthy channel's webhook refused.
                    async with parked(of_group=False):
                        await stack.enter_async_context(self._hosts.hold(host))
                        await self._total.acquire()
                        stack.callback(self._total.release)
            except TimeoutError:
                if deadline.expired():
                    raise SlotWaitExpired(channel_id) from None
                raise
            if not still_owned():
                # The partition moved (or the member stops) while this waited:
                # its next owner sends it; a POST now would be a second one.
                raise Abandoned(channel_id)
        except BaseException:
            await stack.aclose()
            raise
        finally:
            WAITING.dec()
        WAIT_TIME.observe(time.perf_counter() - started)
        async with stack:
            yield
