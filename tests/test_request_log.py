"""The request-log buffer while the database is away: bounded in bytes, the oldest
entries dropped and counted, the webhook never held up. The database here is a
real client pointed at a port nothing listens on, so every flush fails as it
would in an outage."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import REGISTRY
from pymongo import AsyncMongoClient

from happ_common.ids import new_log_id
from happ_common.request_log import MAX_REQUEST_BODY, LogEntry, RequestLogWriter
from happ_devtools.procs import free_port
from tests.conftest import System

MiB = 1024 * 1024


@pytest.fixture
async def unreachable() -> AsyncIterator[AsyncMongoClient[dict[str, Any]]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        f"mongodb://127.0.0.1:{free_port()}", serverSelectionTimeoutMS=100, connect=False
    )
    try:
        yield client
    finally:
        await client.close()


def entry(n: int, channel_id: str = "cm_requestlogbuffer") -> LogEntry:
    return LogEntry.model_construct(
        id=new_log_id(),
        channel_id=channel_id,
        direction="incoming",
        created_at=datetime.now(UTC),
        method="POST",
        url="/webhook/cm_requestlogbuffer",
        status_code=200,
        error_code=None,
        duration_ms=1.0,
        request_body=f"{n:08d}" + "x" * (MAX_REQUEST_BODY - 8),
        response_body=None,
        message_id=f"m{n}",
    )


def dropped() -> float:
    return REGISTRY.get_sample_value("happ_request_log_dropped_total") or 0.0


def test_the_buffer_holds_no_more_than_its_bytes_however_many_entries_arrive(
    unreachable: AsyncMongoClient[dict[str, Any]],
) -> None:
    # 80 MB of 16 KB request bodies: more than the default bound of 64 MiB, far
    # fewer entries than a bound in entries would ever notice.
    writer = RequestLogWriter(unreachable["happ"])
    gc.collect()
    tracemalloc.start()
    for n in range(5_000):
        writer.add(entry(n))
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert held <= 66 * MiB, held


async def test_when_full_the_oldest_entries_are_dropped_and_counted(system: System) -> None:
    # The database is slower than the traffic: nothing is flushed while 200
    # entries (~3.3 MB) arrive, then it catches up.
    writer = RequestLogWriter(system.db, max_bytes=1 * MiB)
    channel_id = "cm_" + uuid.uuid4().hex[:16]
    before = dropped()
    started = time.perf_counter()
    for n in range(200):
        writer.add(entry(n, channel_id))
    assert time.perf_counter() - started < 1.0  # never waits on the database
    assert writer.buffered_bytes <= 1 * MiB
    kept = writer.buffered
    assert 40 <= kept < 200
    assert dropped() == before + 200 - kept
    await writer.flush()
    written = await system.db.request_log.find({"channel_id": channel_id}).to_list(None)
    # The newest are kept: what an operator looks for once the database is back.
    assert sorted(d["request_body"][:8] for d in written) == [
        f"{n:08d}" for n in range(200 - kept, 200)
    ]
    assert writer.buffered == writer.buffered_bytes == 0


async def test_failed_flushes_keep_the_bound_and_warn_at_most_once_a_minute(
    unreachable: AsyncMongoClient[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    writer = RequestLogWriter(
        unreachable["happ"], max_bytes=1 * MiB, flush_interval_s=0.01, batch_size=10
    )
    before = dropped()
    caplog.set_level(logging.WARNING, logger="happ_common.request_log")
    await writer.start()
    try:
        for n in range(300):
            writer.add(entry(n))
            if n % 50 == 0:
                await asyncio.sleep(0.3)  # let flushes fail and put their batch back
            assert writer.buffered_bytes <= 1 * MiB
    finally:
        await writer.stop()  # its last flush fails too: what is left is counted
    assert writer.buffered == 0
    assert dropped() == before + 300
    full = [r for r in caplog.records if "buffer is full" in r.getMessage()]
    assert len(full) == 1, [r.getMessage() for r in full]
