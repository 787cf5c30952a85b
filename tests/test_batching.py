"""Batcher: many callers, one round trip, and each caller its own outcome."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import pytest
from pymongo import InsertOne, UpdateOne
from pymongo.errors import AutoReconnect

from happ_common.batching import Batcher, WriteFailed, bulk_write_outcomes, outcome
from tests.conftest import System


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


async def test_with_nothing_in_flight_a_batch_goes_at_once_else_it_gathers() -> None:
    calls: list[list[str]] = []
    release, holding = asyncio.Event(), asyncio.Event()

    async def run(items: Sequence[str]) -> list[str]:
        calls.append(list(items))
        if items == ["held"]:
            holding.set()
            await release.wait()
        return list(items)

    batcher: Batcher[str, str] = Batcher("test", run, max_wait_s=0.3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    # Idle: no max_wait, and callers woken together still share the round trip.
    assert list(await asyncio.gather(batcher.submit("a"), batcher.submit("b"))) == ["a", "b"]
    assert loop.time() - started < 0.2
    assert calls == [["a", "b"]]

    held = asyncio.ensure_future(batcher.submit("held"))
    await holding.wait()
    # A batch in flight: the next ones gather for up to max_wait.
    started = loop.time()
    c = asyncio.ensure_future(batcher.submit("c"))
    await asyncio.sleep(0.05)
    d = asyncio.ensure_future(batcher.submit("d"))
    assert list(await asyncio.gather(c, d)) == ["c", "d"]
    assert loop.time() - started >= 0.25
    assert calls[2] == ["c", "d"]
    release.set()
    assert await held == "held"


async def test_bulk_outcomes_tell_a_duplicate_insert_from_an_upsert_that_lost_a_race(
    system: System,
) -> None:
    coll = system.db[f"bulk_outcomes_{uuid.uuid4().hex}"]
    await coll.insert_one({"_id": "taken", "v": 1})
    written = await bulk_write_outcomes(
        coll,
        [
            InsertOne({"_id": "new"}),
            InsertOne({"_id": "taken"}),
            UpdateOne({"_id": "taken"}, {"$set": {"v": 2}}, upsert=True),
            UpdateOne({"_id": "fresh"}, {"$set": {"v": 3}}, upsert=True),
            # Matches nothing, and its upsert finds the _id taken: what a
            # concurrent upsert of the same document meets.
            UpdateOne({"_id": "taken", "v": 99}, {"$set": {"v": 4}}, upsert=True),
        ],
    )
    assert written[:4] == [True, False, False, True]
    assert isinstance(written[4], WriteFailed)
    with pytest.raises(WriteFailed):
        outcome(written[4])  # its caller is told
    assert await coll.find_one({"_id": "taken"}) == {"_id": "taken", "v": 2}
