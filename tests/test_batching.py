"""Batcher: many callers, one round trip, and each caller its own outcome."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from pymongo.errors import AutoReconnect

from happ_common.batching import Batcher


async def test_one_bad_item_fails_only_its_own_caller() -> None:
    calls: list[list[str]] = []

    async def run(items: Sequence[str]) -> list[str]:
        calls.append(list(items))
        if "bad" in items:
            raise OverflowError("MongoDB can only handle up to 8-byte ints")
        return [i.upper() for i in items]

    batcher: Batcher[str, str] = Batcher("test", run)
    results = await asyncio.gather(
        *(batcher.submit(i) for i in ("a", "bad", "b")), return_exceptions=True
    )
    assert results[0] == "A" and results[2] == "B"
    assert isinstance(results[1], OverflowError)
    assert calls[0] == ["a", "bad", "b"]  # one round trip first, then each alone


async def test_an_outage_fails_every_caller_without_trying_each_alone() -> None:
    calls = 0

    async def run(items: Sequence[str]) -> list[str]:
        nonlocal calls
        calls += 1
        raise AutoReconnect("database away")

    batcher: Batcher[str, str] = Batcher("test", run)
    results = await asyncio.gather(
        *(batcher.submit(i) for i in ("a", "b", "c")), return_exceptions=True
    )
    assert all(isinstance(r, AutoReconnect) for r in results)
    assert calls == 1
