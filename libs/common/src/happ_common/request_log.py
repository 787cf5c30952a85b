"""The request log: one entry per incoming request and per outgoing attempt.

Entries are buffered in memory and written with ``insert_many`` in the
background, so no request waits on MongoDB for its own log line; the buffer is
flushed on shutdown. The buffer is bounded in bytes (an estimate: an entry's
bodies, up to 20 KB, dwarf the rest): if the database stays away long enough to
fill it, the oldest entries are dropped, counted (``happ_request_log_dropped_total``)
and warned about at most once a minute, rather than letting memory grow without
end or holding up a request. The oldest go, not the newest: once the database is
back, the entries an operator looks for are the recent ones (what integrators
are sending now, how the last deliveries went), while the start of an outage is
told by the metrics, this warning and the services' own logs.
Signatures and secrets never enter an entry: callers pass bodies, not headers
(an outgoing attempt's channel headers are kept by name, their values masked).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections import deque
from datetime import datetime
from typing import Literal

from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, PyMongoError

from happ_common.mongo import REQUEST_LOG, Document
from happ_common.settings import REQUEST_LOG_BUFFER_BYTES

Direction = Literal["incoming", "outgoing"]

MAX_REQUEST_BODY = 16 * 1024
MAX_RESPONSE_BODY = 4 * 1024
# An entry's document besides its bodies, measured with tracemalloc (ids, times,
# the dict itself): ~0.7 KB.
_ENTRY_OVERHEAD = 800
_BODIES = ("request_body", "response_body")
_WARN_EVERY_S = 60.0

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
    # An outgoing attempt's channel headers (``custom_headers``): {name: MASK},
    # never a value.
    outgoing_headers: dict[str, str] | None = None


def cut(text: str | bytes | None, limit: int) -> str | None:
    if text is None:
        return None
    if isinstance(text, bytes):
        text = text[: limit + 4].decode("utf-8", errors="replace")
    return text if len(text) <= limit else text[:limit]


def document(entry: LogEntry) -> Document:
    """The entry as stored. Every field is a scalar (or a small dict of strings),
    so the instance's own dict is the document: cheaper than model_dump on the
    ingress's hot path, same content."""
    doc = dict(entry.__dict__)
    doc["_id"] = doc.pop("id")
    if doc.get("outgoing_headers") is None:
        doc.pop("outgoing_headers", None)  # most entries: no field rather than a null
    return doc


class RequestLogWriter:
    """Batches entries into ``insert_many`` calls; owned by a service's lifespan."""

    def __init__(
        self,
        db: AsyncDatabase[Document],
        *,
        flush_interval_s: float = 0.25,
        batch_size: int = 250,
        max_bytes: int = REQUEST_LOG_BUFFER_BYTES,
    ) -> None:
        self._coll = db[REQUEST_LOG]
        self._buffer: deque[tuple[Document, int]] = deque()
        self.buffered_bytes = 0
        self._interval = flush_interval_s
        self._batch_size = batch_size
        self._max_bytes = max_bytes
        self._dropped_unwarned = 0
        self._warned_at = -_WARN_EVERY_S
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def add(self, entry: LogEntry) -> None:
        doc = document(entry)
        size = _ENTRY_OVERHEAD + sum(sys.getsizeof(doc[k]) for k in _BODIES if doc[k] is not None)
        self._buffer.append((doc, size))
        self.buffered_bytes += size
        self._bound()
        if len(self._buffer) >= self._batch_size:
            self._wake.set()

    def _bound(self) -> None:
        dropped = 0
        while self.buffered_bytes > self._max_bytes and self._buffer:
            self.buffered_bytes -= self._buffer.popleft()[1]
            dropped += 1
        if not dropped:
            return
        LOG_DROPPED.inc(dropped)
        self._dropped_unwarned += dropped
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY_S:
            log.warning(
                "request log: buffer is full (%d bytes), MongoDB slow or away: dropped the "
                "%d oldest entries since the last warning",
                self._max_bytes,
                self._dropped_unwarned,
            )
            self._warned_at = now
            self._dropped_unwarned = 0

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
            self._buffer.clear()
            self.buffered_bytes = 0

    async def flush(self) -> None:
        while self._buffer:
            taken = [
                self._buffer.popleft() for _ in range(min(self._batch_size, len(self._buffer)))
            ]
            self.buffered_bytes -= sum(size for _, size in taken)
            try:
                await self._coll.insert_many([doc for doc, _ in taken], ordered=False)
                LOG_WRITTEN.inc(len(taken))
            except BulkWriteError as exc:
                # Duplicate ids after a retried batch are fine: the entry is there.
                LOG_WRITTEN.inc(exc.details.get("nInserted", 0))
            except (PyMongoError, asyncio.CancelledError):
                # Back in front, as the oldest: the bound drops them first if it must.
                # Cancelled (stop() during a write): stop's own flush writes them, a
                # duplicate id meaning the cancelled write landed after all.
                self._buffer.extendleft(reversed(taken))
                self.buffered_bytes += sum(size for _, size in taken)
                self._bound()
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
