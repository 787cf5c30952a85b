"""The request log: one entry per incoming request and per outgoing attempt.

Entries are buffered in memory and written with ``insert_many`` in the
background, so no request waits on MongoDB for its own log line; the buffer is
flushed on shutdown. The buffer is bounded: if the database stays away long
enough to fill it, the oldest entries are dropped and counted
(``happ_request_log_dropped_total``) rather than letting memory grow without end.
Signatures and secrets never enter an entry: callers pass bodies, not headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from datetime import datetime
from typing import Literal

from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, PyMongoError

from happ_common.mongo import REQUEST_LOG, Document

Direction = Literal["incoming", "outgoing"]

MAX_REQUEST_BODY = 16 * 1024
MAX_RESPONSE_BODY = 4 * 1024

log = logging.getLogger(__name__)

LOG_WRITTEN = Counter("happ_request_log_written_total", "Request-log entries written")
LOG_DROPPED = Counter(
    "happ_request_log_dropped_total", "Request-log entries dropped because the buffer was full"
)


class LogEntry(BaseModel):
    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True)

    id: str = Field(alias="_id")
    channel_id: str
    direction: Direction
    created_at: datetime
    method: str = "POST"
    url: str
    status_code: int | None
    error_code: str | None = None
    duration_ms: float
    request_body: str | None = None
    response_body: str | None = None
    message_id: str | None = None
    attempt: int | None = None


def cut(text: str | bytes | None, limit: int) -> str | None:
    if text is None:
        return None
    if isinstance(text, bytes):
        text = text[: limit + 4].decode("utf-8", errors="replace")
    return text if len(text) <= limit else text[:limit]


class RequestLogWriter:
    """Batches entries into ``insert_many`` calls; owned by a service's lifespan."""

    def __init__(
        self,
        db: AsyncDatabase[Document],
        *,
        flush_interval_s: float = 0.05,
        batch_size: int = 250,
        max_buffer: int = 100_000,
    ) -> None:
        self._coll = db[REQUEST_LOG]
        self._buffer: deque[Document] = deque()
        self._interval = flush_interval_s
        self._batch_size = batch_size
        self._max_buffer = max_buffer
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def add(self, entry: LogEntry) -> None:
        if len(self._buffer) >= self._max_buffer:
            self._buffer.popleft()
            LOG_DROPPED.inc()
        # Every field is a scalar, so the instance's own dict is the document:
        # cheaper than model_dump on the ingress's hot path, same content.
        doc = dict(entry.__dict__)
        doc["_id"] = doc.pop("id")
        self._buffer.append(doc)
        if len(self._buffer) >= self._batch_size:
            self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="request-log-writer")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            await self.flush()
        except PyMongoError as exc:
            LOG_DROPPED.inc(len(self._buffer))
            log.error("request log: %d entries lost at shutdown: %s", len(self._buffer), exc)

    async def flush(self) -> None:
        while self._buffer:
            batch = [
                self._buffer.popleft() for _ in range(min(self._batch_size, len(self._buffer)))
            ]
            try:
                await self._coll.insert_many(batch, ordered=False)
                LOG_WRITTEN.inc(len(batch))
            except BulkWriteError as exc:
                # Duplicate ids after a retried batch are fine: the entry is there.
                LOG_WRITTEN.inc(exc.details.get("nInserted", 0))
            except PyMongoError:
                self._buffer.extendleft(reversed(batch))
                raise

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            try:
                await self.flush()
            except PyMongoError as exc:
                log.warning("request log flush failed, will retry: %s", exc)
                await asyncio.sleep(1.0)
