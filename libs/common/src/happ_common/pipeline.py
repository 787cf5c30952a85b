"""A keyed, ordered, concurrent Kafka consumer that never commits work not done.

The assistant and the delivery service both need it: LLM calls take seconds and
endpoints may take ten, so one record at a time per partition cannot keep up,
yet one conversation's records must be handled in order and nothing may be
lost. FastStream's subscribers offer either ordered-and-serial or
concurrent-and-unordered with at-most-once acks, so this consumer drives
aiokafka directly:

* per key a FIFO whose head alone runs: keys run concurrently, one key in order;
* per partition the set of unfinished offsets: the committed offset is the lowest
  unfinished one (or the last fetched + 1). A record leaves that set only when
  its handler returned, or after it was parked on the dead-letter topic. Work
  skipped or abandoned on revocation or shutdown stays unfinished, so the
  partition's next owner gets it;
* failures are classified: a record that will fail the same way every time
  (``PoisonRecord``, a validation error, a document MongoDB cannot store) is
  parked on ``<topic>.dlq``; an outage (database, broker, network, timeouts) is
  retried with backoff for as long as it lasts, never skipped, while the
  partition's fetching is paused; any other error (a bug) is retried a few
  times, then parked, so it is seen and replayable rather than stalling the
  partition forever;
* a global bound on active records (queued or running): when reached, fetching
  pauses (``consumer.pause``) while the poll loop keeps the membership alive. A
  handler that waits on something other than this consumer's capacity (a
  closed conversation gate, a retry not yet due, a channel's share of
  connections) marks its key ``parked()``: the key's records then count against
  a separate byte budget, so they can neither starve the others nor deadlock
  the records that would release them (topics in ``always_fetch``, whose
  records release parked ones, are fetched even when that budget is full);
  with ``group_of``, the parked bytes are also counted per group (a tenant), so
  the service can act on one group before the budget shared by all is full;
* newly assigned partitions are held (paused, and anything fetched early sought
  back) until the assignment callback has finished: the delivery service
  restores its conversation gates there;
* on revocation: the service's callback first (work waiting on partition state
  lets go), running work gets a grace period, what still runs is cancelled
  (abandoned: unfinished), the callback runs again (to undo state the grace
  period built), and the commit covers only finished work. A handler that
  waited can ask ``still_owned()`` before doing what it cannot take back.

Topics read together are assigned with the range assignor so equal partition
numbers of co-partitioned topics land on the same member.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import IllegalStateError, KafkaError
from aiokafka.structs import OffsetAndMetadata
from bson.errors import BSONError
from opentelemetry.trace import SpanKind
from prometheus_client import Counter, Gauge, Histogram
from pydantic import ValidationError
from pymongo.errors import PyMongoError

from happ_common import tracing
from happ_common.in_flight_limit import InFlightLimit
from happ_common.kafka import PublishFailed
from happ_common.log_context import message_scope


class Record(Protocol):
    """The part of aiokafka's ``ConsumerRecord`` that handlers use."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int


Handler = Callable[[Record], Awaitable[None]]
# May be async: an assignment callback is awaited before any record of the
# newly assigned partitions is handed to the handler.
PartitionsCallback = Callable[[set[TopicPartition]], Awaitable[None] | None]
KeyFunction = Callable[[Record], object]
# The tenant a record belongs to, for a per-tenant view of the parked budget.
GroupFunction = Callable[[Record], str]
# Parks a record that can never be handled on its dead-letter topic.
DeadLetterSink = Callable[[Record, BaseException], Awaitable[None]]


class PoisonRecord(Exception):
    """The record will fail the same way however often it is tried (it does not
    decode, or it breaks a rule of its event): park it, do not retry it."""


class Abandoned(Exception):
    """The handler let go of its record without finishing it (its partition was
    revoked while it waited): the record stays unfinished, and the partition's
    next owner handles it."""


# Errors that retrying cannot fix: dead-lettered at once. BSON errors are
# documents no MongoDB can store (a key with NUL, over 16 MB).
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (PoisonRecord, ValidationError, BSONError)
# Errors of an outage: retried, never skipped, for as long as they last.
# Anything else (a bug, most likely) is retried ``unknown_error_attempts``
# times, then dead-lettered: visible, alerted and replayable once fixed, rather
# than stalling its partition forever.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    PyMongoError,
    KafkaError,
    PublishFailed,
    OSError,
    TimeoutError,
)


def record_key(record: Record) -> object:
    """Records with a key are ordered by it; keyless ones are independent."""
    if record.key is not None:
        return record.key
    return (record.topic, record.partition, record.offset)


log = logging.getLogger(__name__)

IN_FLIGHT = Gauge(
    "happ_pipeline_in_flight", "Active records held by a consumer (queued or running)", ["consumer"]
)
IN_FLIGHT_LIMIT = Gauge(
    "happ_pipeline_in_flight_limit",
    "Active records a consumer may hold now: max_in_flight, lowered while the database is"
    " slow (happ_common.in_flight_limit)",
    ["consumer"],
)
PARKED_BYTES = Gauge(
    "happ_pipeline_parked_bytes",
    "Bytes of records whose key waits on something other than the consumer (gate, due time)",
    ["consumer"],
)
PARKED_KEYS = Gauge("happ_pipeline_parked_keys", "Keys parked now", ["consumer"])
ASSIGNED = Gauge("happ_pipeline_assigned_partitions", "Partitions this member owns", ["consumer"])
ACTIVE_KEYS = Gauge(
    "happ_pipeline_active_keys", "Keys (conversations) with work in flight", ["consumer"]
)
PROCESSED = Counter("happ_pipeline_processed_total", "Records handled", ["consumer", "outcome"])
RETRYING = Gauge(
    "happ_pipeline_retrying_records",
    "Records whose handler failed on an outage and waits to be tried again",
    ["consumer"],
)
DEAD_LETTERS = Counter(
    "happ_pipeline_dead_letters_total",
    "Records parked on a dead-letter topic",
    ["consumer", "topic"],
)
OLDEST_UNFINISHED = Gauge(
    "happ_pipeline_oldest_unfinished_age_seconds",
    "Age (from its broker timestamp) of the oldest record not yet finished, per partition",
    ["consumer", "topic", "partition"],
)
LAG = Gauge(
    "happ_pipeline_lag_records",
    "Records on the log past the committed offset, per partition",
    ["consumer", "topic", "partition"],
)
DELAY = Histogram(
    "happ_pipeline_processing_delay_seconds",
    "From the record's broker timestamp to the start of its handling",
    ["consumer"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
HANDLE_TIME = Histogram(
    "happ_pipeline_handle_seconds",
    "Time spent handling one record",
    ["consumer"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 90),
)

# What a record costs while parked beyond its key and value (the record object,
# its queue entry and bookkeeping), so that empty records still count.
_RECORD_OVERHEAD = 256


@dataclass(eq=False)
class _Partition:
    """What this member holds of one assigned partition."""

    # offset -> broker timestamp (ms); insertion-ordered = offset order.
    unfinished: dict[int, int] = field(default_factory=dict)
    next_offset: int | None = None
    committed: int | None = None
    # False until the assignment callback has finished: nothing is handed out.
    ready: bool = False
    revoked: bool = False
    retrying: int = 0  # records failing on an outage: fetching is paused meanwhile
    running: set[asyncio.Task[None]] = field(default_factory=set)
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    gone: asyncio.Event = field(default_factory=asyncio.Event)

    def commit_point(self) -> int | None:
        if self.unfinished:
            return next(iter(self.unfinished))
        return self.next_offset


@dataclass(eq=False)
class _Work:
    record: Record
    part: _Partition
    size: int


@dataclass(eq=False)
class _Key:
    queue: deque[_Work] = field(default_factory=deque)
    parked: bool = False
    group: str | None = None
    # While parked: whether its bytes count against its group's share too.
    group_counted: bool = True


@dataclass
class PipelineConfig:
    name: str
    # Where and how to connect (happ_common.kafka_connection.client_options).
    connection: dict[str, Any] = field(repr=False)  # may hold a SASL password
    group_id: str
    topics: tuple[str, ...]
    max_in_flight: int = 1024
    max_parked_bytes: int = 64 * 1024 * 1024
    commit_interval_s: float = 0.5
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 1_000
    revoke_grace_s: float = 5.0
    retry_backoff_s: float = 0.2
    retry_backoff_max_s: float = 10.0
    unknown_error_attempts: int = 5
    # Topics still fetched when the parked budget is full: their records are
    # what lets parked ones go (the delivery service's retries open the gates
    # its parked replies wait at), so pausing them could wait forever.
    always_fetch: tuple[str, ...] = ()
    consumer_options: dict[str, Any] = field(default_factory=dict)
    # Work on fewer than max_in_flight keys at once while the database's round
    # trips (this reading, in ms) are above the target
    # (happ_common.in_flight_limit); None or a target of 0: no such limit.
    db_latency_ms: Callable[[], float | None] | None = field(default=None, repr=False)
    db_latency_target_ms: float = 0.0


# The key whose record the current task is handling (see ``parked``).
_CURRENT: ContextVar[tuple[KeyedPipeline, _Key] | None] = ContextVar("pipeline_key", default=None)


# The partition of the record the current task is handling (see ``still_owned``).
_CURRENT_PART: ContextVar[tuple[KeyedPipeline, _Partition] | None] = ContextVar(
    "pipeline_partition", default=None
)


def still_owned() -> bool:
    """Inside a handler: whether its record's partition is still this member's
    and the member is not stopping. A handler about to start something it
    cannot take back (a POST) after a wait checks this, and raises ``Abandoned``
    if not. Outside a pipeline's handler: True."""
    current = _CURRENT_PART.get()
    if current is None:
        return True
    pipeline, part = current
    return not (part.revoked or pipeline._stopping)


@contextlib.asynccontextmanager
async def parked(*, of_group: bool = True) -> AsyncIterator[None]:
    """Inside a handler: while in this block, the handler's key waits on something
    other than this consumer (a gate another record opens, a due time, a
    channel's share of connections), so its records leave the active budget for
    the parked one. ``of_group=False``: the wait is for something every group
    shares (the process's connections), so its bytes are not held against the
    group's own share (``parked_bytes_by_group``). Outside a pipeline's handler
    it does nothing."""
    current = _CURRENT.get()
    if current is None or current[1].parked:
        yield
        return
    pipeline, key = current
    pipeline._park(key, True, of_group=of_group)
    try:
        yield
    finally:
        pipeline._park(key, False)


class KeyedPipeline:
    def __init__(
        self,
        config: PipelineConfig,
        handler: Handler,
        *,
        on_assigned: PartitionsCallback | None = None,
        on_revoked: PartitionsCallback | None = None,
        key_of: KeyFunction = record_key,
        group_of: GroupFunction | None = None,
        dead_letters: DeadLetterSink | None = None,
    ) -> None:
        self.config = config
        self._handler = handler
        self._key_of = key_of
        self._group_of = group_of
        self._on_assigned = on_assigned
        self._on_revoked = on_revoked
        self._dead_letters = dead_letters
        self._partitions: dict[TopicPartition, _Partition] = {}
        self._keys: dict[object, _Key] = {}
        self._key_tasks: set[asyncio.Task[None]] = set()
        self._abandoning: set[asyncio.Task[None]] = set()
        self._in_flight = 0
        self._parked_bytes = 0
        self._parked_keys = 0
        self._parked_by_group: dict[str, int] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._fetch_task: asyncio.Task[None] | None = None
        self._commit_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._paused: set[TopicPartition] = set()
        self.assigned_event = asyncio.Event()
        self._labels = {"consumer": config.name}

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        self._consumer = AIOKafkaConsumer(
            **cfg.connection,
            group_id=cfg.group_id,
            client_id=f"happ-{cfg.name}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            partition_assignment_strategy=(RangePartitionAssignor,),
            session_timeout_ms=cfg.session_timeout_ms,
            heartbeat_interval_ms=cfg.heartbeat_interval_ms,
            # Our revocation takes up to the grace period plus the cut-off; a
            # member slower than this would be dropped and rebalance again.
            rebalance_timeout_ms=max(
                cfg.session_timeout_ms, int(cfg.revoke_grace_s * 1000) + 15_000
            ),
            **cfg.consumer_options,
        )
        self._consumer.subscribe(list(cfg.topics), listener=_Listener(self))
        await self._consumer.start()
        self._fetch_task = asyncio.create_task(self._fetch_loop(), name=f"{cfg.name}-fetch")
        self._commit_task = asyncio.create_task(self._commit_loop(), name=f"{cfg.name}-commit")

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop fetching, let running work finish (within the revocation's grace
        period unless told otherwise), commit what is done, leave the group. What
        did not finish stays uncommitted for the next owner."""
        grace_s = self.config.revoke_grace_s if grace_s is None else grace_s
        self._stopping = True
        for task in (self._fetch_task, self._commit_task):
            if task:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        owned = set(self._partitions)
        for part in self._partitions.values():
            part.gone.set()
        await self._call(self._on_revoked, owned)
        if self._key_tasks:
            _, pending = await asyncio.wait(set(self._key_tasks), timeout=grace_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        if self._consumer is not None:
            with contextlib.suppress(KafkaError):
                await self._commit()
            await self._consumer.stop()

    def healthy(self) -> bool:
        """False once the fetch or commit loop has died: nothing would move again,
        so the process should be restarted (``/healthz``)."""
        return all(
            task is not None and not task.done() for task in (self._fetch_task, self._commit_task)
        )

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def parked_bytes(self) -> int:
        return self._parked_bytes

    def parked_bytes_by_group(self) -> dict[str, int]:
        """Parked bytes of each group that has any (``group_of`` given)."""
        return dict(self._parked_by_group)

    def assignment(self) -> set[TopicPartition]:
        return set(self._partitions)

    # -- fetching ------------------------------------------------------------------

    def _blocked(self, tp: TopicPartition, over_active: bool, over_parked: bool) -> bool:
        """Whether fetching ``tp`` must wait for room: every topic when the active
        budget is full; when the parked one is, all but ``always_fetch`` topics,
        whose records are what releases parked ones (delivery's retries)."""
        return over_active or (over_parked and tp.topic not in self.config.always_fetch)

    def _apply_pauses(
        self, consumer: AIOKafkaConsumer, over_active: bool, over_parked: bool
    ) -> None:
        assigned = consumer.assignment()
        want = {
            tp
            for tp in assigned
            if self._blocked(tp, over_active, over_parked)
            or (p := self._partitions.get(tp)) is None
            or not p.ready
            or p.retrying
        }
        if want == self._paused:
            return
        if resume := self._paused - want:
            consumer.resume(*(tp for tp in resume if tp in assigned))
        if pause := want - self._paused:
            consumer.pause(*pause)
        self._paused = want

    async def _fetch_loop(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        cfg = self.config
        limit = InFlightLimit(
            cfg.max_in_flight, latency_ms=cfg.db_latency_ms, target_ms=cfg.db_latency_target_ms
        )
        loop = asyncio.get_running_loop()
        while not self._stopping:
            # The limit bounds the keys being worked on (handlers running), not
            # the records queued behind them: at a low limit a conversation with
            # many messages waiting must not take the places of the others.
            active = len(self._keys) - self._parked_keys
            room = min(
                cfg.max_in_flight - self._in_flight,
                limit.update(active, loop.time()) - active,
            )
            IN_FLIGHT_LIMIT.labels(**self._labels).set(limit.current)
            over_active = room <= 0
            over_parked = self._parked_bytes >= cfg.max_parked_bytes
            # Keep polling even when full: it keeps us in the group.
            self._apply_pauses(consumer, over_active, over_parked)
            try:
                batches = await consumer.getmany(timeout_ms=100, max_records=max(room, 1))
            except KafkaError as exc:
                log.warning("%s: fetch failed: %s", cfg.name, exc)
                await asyncio.sleep(0.5)
                continue
            for tp, records in batches.items():
                part = self._partitions.get(tp)
                if (
                    part is None
                    or not part.ready
                    or part.revoked
                    or self._blocked(tp, over_active, over_parked)
                ):
                    # Not ours to hand out (yet): fetch these again later. A
                    # revoked partition's position no longer matters.
                    if records and (part is None or not part.revoked):
                        with contextlib.suppress(IllegalStateError, AssertionError):
                            consumer.seek(tp, records[0].offset)
                    continue
                for record in records:
                    part.unfinished[record.offset] = record.timestamp
                    part.next_offset = record.offset + 1
                    self._enqueue(record, part)
            IN_FLIGHT.labels(**self._labels).set(self._in_flight)

    def _enqueue(self, record: Record, part: _Partition) -> None:
        key = self._key_of(record)
        entry = self._keys.get(key)
        fresh = entry is None
        if entry is None:
            entry = self._keys[key] = _Key(group=self._group_of(record) if self._group_of else None)
        work = _Work(
            record, part, len(record.value or b"") + len(record.key or b"") + _RECORD_OVERHEAD
        )
        entry.queue.append(work)
        if entry.parked:
            self._count_parked(entry, work.size)
        else:
            self._in_flight += 1
        if fresh:
            task = asyncio.create_task(self._drain(key, entry))
            self._key_tasks.add(task)
            task.add_done_callback(self._key_tasks.discard)
            ACTIVE_KEYS.labels(**self._labels).set(len(self._keys))

    def _count_parked(self, entry: _Key, size: int) -> None:
        self._parked_bytes += size
        if entry.group is not None and entry.group_counted:
            total = self._parked_by_group.get(entry.group, 0) + size
            if total:
                self._parked_by_group[entry.group] = total
            else:
                self._parked_by_group.pop(entry.group, None)

    def _release(self, entry: _Key, work: _Work) -> None:
        if entry.parked:
            self._count_parked(entry, -work.size)
        else:
            self._in_flight -= 1

    def _park(self, entry: _Key, parked: bool, *, of_group: bool = True) -> None:
        if entry.parked == parked:
            return
        if parked:
            entry.group_counted = of_group
        size = sum(w.size for w in entry.queue)
        sign = 1 if parked else -1
        self._count_parked(entry, sign * size)
        self._in_flight -= sign * len(entry.queue)
        self._parked_keys += sign
        entry.parked = parked
        if not parked:
            entry.group_counted = True
        PARKED_BYTES.labels(**self._labels).set(self._parked_bytes)
        PARKED_KEYS.labels(**self._labels).set(self._parked_keys)
        IN_FLIGHT.labels(**self._labels).set(self._in_flight)

    # -- handling ------------------------------------------------------------------

    async def _drain(self, key: object, entry: _Key) -> None:
        task = asyncio.current_task()
        assert task is not None
        _CURRENT.set((self, entry))
        try:
            while entry.queue:
                work = entry.queue[0]
                part = work.part
                if not part.revoked and not self._stopping:
                    _CURRENT_PART.set((self, part))
                    part.running.add(task)
                    part.idle.clear()
                    done = False
                    try:
                        done = await self._handle(work.record, part)
                    except asyncio.CancelledError:
                        if task not in self._abandoning:
                            raise
                        # Cut off after the revocation's grace period: unfinished.
                        self._abandoning.discard(task)
                        task.uncancel()
                    finally:
                        part.running.discard(task)
                        if not part.running:
                            part.idle.set()
                    if done:
                        part.unfinished.pop(work.record.offset, None)
                entry.queue.popleft()
                self._release(entry, work)
        finally:
            # Cancelled at shutdown: what is left stays unfinished and is redone.
            for work in entry.queue:
                self._release(entry, work)
            entry.queue.clear()
            if entry.parked:
                self._park(entry, False)
            del self._keys[key]
            ACTIVE_KEYS.labels(**self._labels).set(len(self._keys))
            IN_FLIGHT.labels(**self._labels).set(self._in_flight)

    async def _handle(self, record: Record, part: _Partition) -> bool:
        """Handle one record until it is done (True) or let go of (False).

        In a log scope of its own: the handler binds the message it decoded, so
        this loop's lines about that record (failures, dead letters) carry it too.
        """
        with (
            message_scope(),
            tracing.span(
                f"{record.topic} process",
                SpanKind.CONSUMER,
                parent=tracing.kafka_trace_headers(getattr(record, "headers", None)),
                attributes={
                    "messaging.system": "kafka",
                    "messaging.destination.name": record.topic,
                    "messaging.destination.partition.id": str(record.partition),
                    "messaging.kafka.offset": record.offset,
                    "messaging.consumer.group.name": self.config.group_id,
                },
            ),
        ):
            return await self._handle_in_scope(record, part)

    async def _handle_in_scope(self, record: Record, part: _Partition) -> bool:
        if record.timestamp:
            DELAY.labels(**self._labels).observe(max(0.0, time.time() - record.timestamp / 1000))
        started = time.perf_counter()
        failures = unexplained = 0
        try:
            while True:
                try:
                    await self._handler(record)
                except Abandoned:
                    PROCESSED.labels(outcome="abandoned", **self._labels).inc()
                    return False
                except PERMANENT_ERRORS as exc:
                    if await self._dead_letter(record, exc):
                        return True
                    error: BaseException = exc
                except TRANSIENT_ERRORS as exc:
                    error = exc
                except Exception as exc:
                    unexplained += 1
                    if unexplained >= self.config.unknown_error_attempts and (
                        await self._dead_letter(record, exc)
                    ):
                        return True
                    error = exc
                else:
                    PROCESSED.labels(outcome="ok", **self._labels).inc()
                    return True
                # An outage (or a sink that could not take a dead letter): try
                # again for as long as it lasts, never skip.
                failures += 1
                if failures == 1:
                    part.retrying += 1
                    RETRYING.labels(**self._labels).inc()
                log.warning(
                    "%s: handler failed on %s[%d]@%d (failure %d), retrying: %s: %s",
                    self.config.name,
                    record.topic,
                    record.partition,
                    record.offset,
                    failures,
                    type(error).__name__,
                    error,
                    exc_info=failures == 1,
                )
                PROCESSED.labels(outcome="retried", **self._labels).inc()
                backoff = min(
                    self.config.retry_backoff_s * 2 ** (failures - 1),
                    self.config.retry_backoff_max_s,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(part.gone.wait(), backoff)
                if part.revoked or self._stopping:
                    PROCESSED.labels(outcome="abandoned", **self._labels).inc()
                    return False
        finally:
            if failures:
                part.retrying -= 1
                RETRYING.labels(**self._labels).dec()
            HANDLE_TIME.labels(**self._labels).observe(time.perf_counter() - started)

    async def _dead_letter(self, record: Record, error: BaseException) -> bool:
        """Park a record that can never be handled; False if the sink failed."""
        log.error(
            "%s: %s[%d]@%d cannot be handled, dead-lettered: %s",
            self.config.name,
            record.topic,
            record.partition,
            record.offset,
            error,
        )
        if self._dead_letters is not None:
            try:
                await self._dead_letters(record, error)
            except Exception:
                log.warning("%s: dead-letter publish failed", self.config.name, exc_info=True)
                return False
        DEAD_LETTERS.labels(topic=record.topic, **self._labels).inc()
        PROCESSED.labels(outcome="dead_lettered", **self._labels).inc()
        return True

    # -- committing ----------------------------------------------------------------

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.commit_interval_s)
            try:
                await self._commit()
            except KafkaError as exc:
                log.warning("%s: commit failed (will retry): %s", self.config.name, exc)
            self._observe_partitions()

    def _observe_partitions(self) -> None:
        consumer = self._consumer
        now_ms = time.time() * 1000
        for tp, part in list(self._partitions.items()):
            labels = {"topic": tp.topic, "partition": str(tp.partition), **self._labels}
            oldest = next(iter(part.unfinished.values()), None)
            OLDEST_UNFINISHED.labels(**labels).set(
                max(0.0, (now_ms - oldest) / 1000) if oldest else 0.0
            )
            if consumer is not None and part.committed is not None:
                highwater = consumer.highwater(tp)
                if highwater is not None:
                    LAG.labels(**labels).set(max(0, highwater - part.committed))

    async def _commit(self, only: Iterable[TopicPartition] | None = None) -> None:
        assert self._consumer is not None
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        chosen = list(only) if only is not None else list(self._partitions)
        points: dict[TopicPartition, tuple[_Partition, int]] = {}
        for tp in chosen:
            part = self._partitions.get(tp)
            if part is None:
                continue
            point = part.commit_point()
            if point is not None and (part.committed is None or point > part.committed):
                offsets[tp] = OffsetAndMetadata(point, "")
                points[tp] = (part, point)
        if not offsets:
            return
        await self._consumer.commit(offsets)
        for part, point in points.values():
            part.committed = point

    # -- rebalancing ---------------------------------------------------------------

    async def _call(self, callback: PartitionsCallback | None, tps: set[TopicPartition]) -> None:
        if callback is not None and tps:
            result = callback(set(tps))
            if result is not None:
                await result

    async def _revoked(self, revoked: set[TopicPartition]) -> None:
        owned = [tp for tp in revoked if tp in self._partitions]
        parts = [self._partitions[tp] for tp in owned]
        for part in parts:
            part.revoked = True
            part.gone.set()
        # The service first: work that waits on partition state (a gate, a
        # scheduled retry) must let go before we wait for running work.
        await self._call(self._on_revoked, set(owned))
        running = [p.idle.wait() for p in parts if p.running]
        if running:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*running), self.config.revoke_grace_s)
        # Still running after the grace period: cut off, left unfinished, so the
        # new owner never runs a record while this member still does.
        cut_off = {task for p in parts for task in p.running}
        for task in cut_off:
            self._abandoning.add(task)
            task.cancel()
        if cut_off:
            log.warning("%s: %d records cut off by revocation", self.config.name, len(cut_off))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*(p.idle.wait() for p in parts if p.running)), 5.0
                )
        # Work that ran during the grace period may have built partition state
        # after the first call (a gate closed on a failed attempt): undo it too.
        await self._call(self._on_revoked, set(owned))
        try:
            await self._commit(owned)
        except KafkaError as exc:
            log.warning("%s: commit on revocation failed: %s", self.config.name, exc)
        for tp in owned:
            del self._partitions[tp]
            for gauge in (OLDEST_UNFINISHED, LAG):
                with contextlib.suppress(KeyError):
                    gauge.remove(self.config.name, tp.topic, str(tp.partition))
        ASSIGNED.labels(**self._labels).set(len(self._partitions))

    async def _assigned(self, assigned: set[TopicPartition]) -> None:
        new = [tp for tp in assigned if tp not in self._partitions]
        for tp in new:
            part = _Partition()
            part.idle.set()
            self._partitions[tp] = part
        # Held until the service's callback has finished: nothing of these
        # partitions is handed out before (the fetch loop seeks back what came).
        if self._consumer is not None and new:
            self._consumer.pause(*new)
            self._paused |= set(new)
        ASSIGNED.labels(**self._labels).set(len(self._partitions))
        if new:
            # Not awaited here: the callback may need the database, which may be
            # away; the rebalance must not wait for it (the partitions stay held).
            task = asyncio.create_task(self._make_ready({tp: self._partitions[tp] for tp in new}))
            self._key_tasks.add(task)
            task.add_done_callback(self._key_tasks.discard)
        else:
            self.assigned_event.set()

    async def _make_ready(self, parts: dict[TopicPartition, _Partition]) -> None:
        failures = 0
        while True:
            live = {tp for tp, part in parts.items() if not part.revoked}
            if not live or self._stopping:
                return
            try:
                await self._call(self._on_assigned, live)
                break
            except Exception:
                failures += 1
                log.warning(
                    "%s: assignment callback failed (failure %d), retrying",
                    self.config.name,
                    failures,
                    exc_info=failures == 1,
                )
                await asyncio.sleep(
                    min(self.config.retry_backoff_s * 2**failures, self.config.retry_backoff_max_s)
                )
        # Revoked while the callback ran: the revocation callback may have run
        # before the state it undoes was built, so it runs again.
        # (Not if the partition is ours again: its state is valid for us.)
        moved = {tp for tp, part in parts.items() if part.revoked and tp not in self._partitions}
        await self._call(self._on_revoked, moved)
        for part in parts.values():
            part.ready = True
        self.assigned_event.set()


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, pipeline: KeyedPipeline) -> None:
        self._pipeline = pipeline

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._pipeline._revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._pipeline._assigned(set(assigned))
