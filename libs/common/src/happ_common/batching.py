"""Many callers, one database round trip.

The embedded MongoDB-protocol database does a few hundred single operations
per second whatever the concurrency, but thousands of documents per second in
one ``insert_many`` (docs/architecture.md, "Measured numbers behind the
choices"); real MongoDB also prefers fewer, larger round trips. So hot paths
with many messages in flight do not await their own write or read: they hand it
to a ``Batcher``, which gathers what arrives within a few milliseconds (or up to
``max_batch`` items), runs one batch call, and resolves each caller's future with
its own result. A caller still awaits durability before it lets its offset be
committed: batching changes the cost, not the guarantee.

The few milliseconds are waited only while a batch of the same kind is in
flight, when waiting is what fills the next one. With none in flight, what
arrived goes at the end of the event loop's current turn (which still joins the
callers woken together): at a low rate a message would otherwise wait
``max_wait_s`` at each of the five batched stages between its webhook and its
POST, most of a reply's time when nothing queues (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from prometheus_client import Histogram
from pymongo import InsertOne, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, ConnectionFailure

from happ_common.mongo import DUPLICATE_KEY, Document

Write = InsertOne[Document] | UpdateOne
# Per operation: True if it inserted (or upserted) a document, False if an insert
# found its ``_id``/unique key taken or an update matched an existing one, or the
# error that failed it.
Written = bool | Exception

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger(__name__)

BATCH_SIZE = Histogram(
    "happ_db_batch_size",
    "Operations per batched database call",
    ["batch"],
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)


class Batcher(Generic[T, R]):
    """Runs ``run_batch(items) -> results`` (same length, same order) for items
    submitted concurrently; ``submit`` returns the item's own result."""

    def __init__(
        self,
        name: str,
        run_batch: Callable[[Sequence[T]], Awaitable[Sequence[R]]],
        *,
        max_batch: int = 500,
        max_wait_s: float = 0.005,
    ) -> None:
        self._name = name
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._max_wait = max_wait_s
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._timer: asyncio.Handle | None = None
        self._running: set[asyncio.Task[None]] = set()

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if len(self._pending) >= self._max_batch:
            self._flush()
        elif self._timer is None:
            loop = asyncio.get_running_loop()
            if self._running:
                self._timer = loop.call_later(
                    self._max_wait, self._flush, context=contextvars.Context()
                )
            else:
                self._timer = loop.call_soon(self._flush, context=contextvars.Context())
        return await future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        # The batch serves many messages: it must not log or trace as the one whose
        # submit happened to start it.
        task = asyncio.create_task(self._run(batch), context=contextvars.Context())
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        BATCH_SIZE.labels(self._name).observe(len(batch))
        try:
            results = await self._run_batch([item for item, _ in batch])
        except ConnectionFailure as exc:
            # The database is away: every caller's operation failed alike.
            self._fail(batch, exc)
            return
        except Exception as exc:
            if len(batch) > 1:
                # Perhaps one item's own fault (a document that cannot be
                # encoded): tried alone, each caller gets its own outcome, and
                # one bad message cannot fail the others batched with it.
                await asyncio.gather(*(self._run([one]) for one in batch))
            else:
                self._fail(batch, exc)
            return
        except BaseException as exc:
            self._fail(batch, exc)
            raise
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    @staticmethod
    def _fail(batch: list[tuple[T, asyncio.Future[R]]], exc: BaseException) -> None:
        for _, future in batch:
            if not future.done():
                future.set_exception(exc)

    async def drain(self) -> None:
        """Run what is pending now and wait for every batch in flight."""
        self._flush()
        if self._running:
            with contextlib.suppress(Exception):
                await asyncio.gather(*self._running)


class WriteFailed(Exception):
    """One operation of a bulk failed on its own (the others may have landed)."""


async def bulk_write_outcomes(
    collection: AsyncCollection[Document], ops: Sequence[Write]
) -> list[Written]:
    """One unordered ``bulk_write``, its outcome told apart per operation: the
    ``run_batch`` of a ``Batcher`` whose callers insert or update."""
    try:
        result = await collection.bulk_write(list(ops), ordered=False)
    except BulkWriteError as exc:
        details = exc.details
        if details.get("writeConcernErrors"):
            raise
        upserted = {u["index"] for u in details.get("upserted", [])}
        errors = {e["index"]: e for e in details.get("writeErrors", [])}
    else:
        upserted = set(result.upserted_ids or {})
        errors = {}
    outcomes: list[Written] = []
    for i, op in enumerate(ops):
        error = errors.get(i)
        if error is None:
            outcomes.append(isinstance(op, InsertOne) or i in upserted)
        elif error.get("code") == DUPLICATE_KEY and isinstance(op, InsertOne):
            outcomes.append(False)
        else:
            # An upsert's duplicate key is a race with a concurrent upsert of the
            # same document: its update did not apply, so the caller must retry
            # rather than read it as done.
            outcomes.append(WriteFailed(f"{error.get('code')}: {error.get('errmsg')}"))
    return outcomes


def outcome(written: Written) -> bool:
    """A caller's own result out of a batch: raises what failed it."""
    if isinstance(written, Exception):
        raise written
    return written
