"""ChannelCache: shared misses, strict TTL, background refresh of busy entries."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from happ_common.channels import Channel, ChannelCache


class CountingRepo:
    """Stands in for the MongoDB repository: counts reads, answers after a delay."""

    def __init__(self, delay_s: float = 0.05) -> None:
        self.reads = 0
        self.delay_s = delay_s
        self.name = "v1"

    async def get(self, channel_id: str) -> Channel | None:
        self.reads += 1
        await asyncio.sleep(self.delay_s)
        if channel_id == "cm_missing":
            return None
        now = datetime.now(UTC)
        return Channel(
            id=channel_id,
            name=self.name,
            outgoing_url="https://x.y/z",
            hmac_secret="whsec_x",
            created_at=now,
            updated_at=now,
        )


def _cache(repo: CountingRepo, ttl_s: float) -> ChannelCache:
    return ChannelCache(repo, ttl_s)  # type: ignore[arg-type]


async def test_concurrent_misses_share_one_read_and_unknown_ids_are_cached() -> None:
    repo = CountingRepo()
    cache = _cache(repo, ttl_s=10)
    results = await asyncio.gather(*(cache.get("cm_a") for _ in range(20)))
    assert {r.name for r in results if r} == {"v1"} and repo.reads == 1
    assert await cache.get("cm_missing") is None
    assert await cache.get("cm_missing") is None
    assert repo.reads == 2


async def test_an_entry_is_never_served_past_its_ttl() -> None:
    repo = CountingRepo(delay_s=0)
    cache = _cache(repo, ttl_s=0.2)
    assert (await cache.get("cm_a")).name == "v1"  # type: ignore[union-attr]
    repo.name = "v2"
    await asyncio.sleep(0.25)
    assert (await cache.get("cm_a")).name == "v2"  # type: ignore[union-attr]


async def test_a_busy_entry_is_refreshed_in_the_background_before_it_expires() -> None:
    repo = CountingRepo(delay_s=0.05)
    cache = _cache(repo, ttl_s=0.4)
    await cache.get("cm_a")
    repo.name = "v2"
    await asyncio.sleep(0.25)  # second half of the TTL
    started = asyncio.get_running_loop().time()
    got = await cache.get("cm_a")
    assert got is not None and got.name == "v1"  # served at once, not after the read
    assert asyncio.get_running_loop().time() - started < repo.delay_s
    await asyncio.sleep(0.1)  # the background read lands
    assert repo.reads == 2
    assert (await cache.get("cm_a")).name == "v2"  # type: ignore[union-attr]


async def test_many_gets_in_one_tick_refresh_once_without_errors(caplog: Any) -> None:
    repo = CountingRepo(delay_s=0.05)
    cache = _cache(repo, ttl_s=0.4)
    await cache.get("cm_a")
    await asyncio.sleep(0.25)  # second half of the TTL: each get wants a refresh
    await asyncio.gather(*(cache.get("cm_a") for _ in range(10)))
    # A fresh read racing the background one must not break its bookkeeping.
    await cache.get("cm_a", fresh=True)
    await asyncio.sleep(0.15)
    assert repo.reads == 2  # first load, one refresh (which the fresh read shares)
    assert not [r for r in caplog.records if "refreshing channel" in r.getMessage()]
    assert not cache._loading
