"""A background task that does one thing every few seconds, from ``start()`` to
``stop()``: owned by a lifespan like any client. A failing round is logged and
the next one tries again, so an outage (the database away) never ends it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class Periodic:
    def __init__(
        self, name: str, round_: Callable[[], Awaitable[object]], interval_s: float
    ) -> None:
        self.name = name
        self._round = round_
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            try:
                await self._round()
            except Exception as exc:
                log.warning("%s: this round failed, the next one tries again: %s", self.name, exc)
            await asyncio.sleep(self._interval_s)
