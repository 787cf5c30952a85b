"""A keyed, ordered, concurrent Kafka consumer with safe commits.

The assistant and the delivery service both need it: LLM calls take seconds and
endpoints may take ten, so one record at a time per partition cannot keep up,
yet one conversation's records must be handled in order and a crash must lose
nothing. FastStream's subscribers offer either ordered-and-serial or
concurrent-and-unordered with at-most-once acks, so this consumer drives
aiokafka directly:

* per key a FIFO whose head alone runs: keys run concurrently, one key in order;
* per partition the set of unfinished offsets: the committed offset is the lowest
  unfinished one (or the last fetched + 1), so a commit never passes a record
  whose work is not done;
* a global bound on records held (queued or running): when reached, fetching
  pauses (``consumer.pause``) while the poll loop keeps the membership alive;
* on revocation, no new work starts for the partition, running work gets a short
  grace period, what is finished is committed and the rest is dropped: the new
  owner redoes it, and handlers are idempotent.

Topics read together are assigned with the range assignor so equal partition
numbers of co-partitioned topics land on the same member.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata
from prometheus_client import Counter, Gauge, Histogram
from pydantic import BaseModel, ValidationError


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
# newly assigned partitions is fetched (the delivery service rebuilds state there).
PartitionsCallback = Callable[[set[TopicPartition]], Awaitable[None] | None]
KeyFunction = Callable[[Record], object]


M = TypeVar("M", bound=BaseModel)


def decode(record: Record, model: type[M]) -> M | None:
    """The record's event, or None (logged with its coordinates) if it is not
    one: retrying cannot fix a record that does not parse, so it is skipped."""
    try:
        return model.model_validate_json(record.value or b"")
    except ValidationError:
        log.error(
            "undecodable %s record %s[%d]@%d skipped",
            model.__name__,
            record.topic,
            record.partition,
            record.offset,
        )
        return None


def record_key(record: Record) -> object:
    """Records with a key are ordered by it; keyless ones are independent."""
    if record.key is not None:
        return record.key
    return (record.topic, record.partition, record.offset)


log = logging.getLogger(__name__)

IN_FLIGHT = Gauge(
    "happ_pipeline_in_flight", "Records held by a consumer (queued or running)", ["consumer"]
)
ASSIGNED = Gauge("happ_pipeline_assigned_partitions", "Partitions this member owns", ["consumer"])
ACTIVE_KEYS = Gauge(
    "happ_pipeline_active_keys", "Keys (conversations) with work in flight", ["consumer"]
)
PROCESSED = Counter("happ_pipeline_processed_total", "Records handled", ["consumer", "outcome"])
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


@dataclass(eq=False)
class _Partition:
    """What this member holds of one assigned partition."""

    unfinished: dict[int, None] = field(default_factory=dict)  # insertion-ordered = offset order
    # Records below this offset were on the log when we took the partition over,
    # so an earlier owner may have handled them; later ones are new to everyone.
    replay_below: float = float("inf")
    next_offset: int | None = None
    committed: int | None = None
    revoked: bool = False
    running: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def commit_point(self) -> int | None:
        if self.unfinished:
            return next(iter(self.unfinished))
        return self.next_offset


@dataclass
class PipelineConfig:
    name: str
    bootstrap_servers: str
    group_id: str
    topics: tuple[str, ...]
    max_in_flight: int = 1024
    commit_interval_s: float = 0.5
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 1_000
    handler_attempts: int = 5
    revoke_grace_s: float = 5.0
    consumer_options: dict[str, Any] = field(default_factory=dict)


class KeyedPipeline:
    def __init__(
        self,
        config: PipelineConfig,
        handler: Handler,
        *,
        on_assigned: PartitionsCallback | None = None,
        on_revoked: PartitionsCallback | None = None,
        key_of: KeyFunction = record_key,
    ) -> None:
        self.config = config
        self._handler = handler
        self._key_of = key_of
        self._on_assigned = on_assigned
        self._on_revoked = on_revoked
        self._partitions: dict[TopicPartition, _Partition] = {}
        self._queues: dict[object, deque[tuple[Record, _Partition]]] = {}
        self._key_tasks: set[asyncio.Task[None]] = set()
        self._in_flight = 0
        self._room = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._fetch_task: asyncio.Task[None] | None = None
        self._commit_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._paused = False
        self.assigned_event = asyncio.Event()
        self._labels = {"consumer": config.name}

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=cfg.bootstrap_servers,
            group_id=cfg.group_id,
            client_id=f"happ-{cfg.name}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            partition_assignment_strategy=(RangePartitionAssignor,),
            session_timeout_ms=cfg.session_timeout_ms,
            heartbeat_interval_ms=cfg.heartbeat_interval_ms,
            **cfg.consumer_options,
        )
        self._consumer.subscribe(list(cfg.topics), listener=_Listener(self))
        await self._consumer.start()
        self._fetch_task = asyncio.create_task(self._fetch_loop(), name=f"{cfg.name}-fetch")
        self._commit_task = asyncio.create_task(self._commit_loop(), name=f"{cfg.name}-commit")

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop fetching, let running work finish (bounded), commit, leave the group."""
        self._stopping = True
        for task in (self._fetch_task, self._commit_task):
            if task:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
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

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def assignment(self) -> set[TopicPartition]:
        return set(self._partitions)

    def may_be_replay(self, record: Record) -> bool:
        """Could an earlier owner of the partition have handled this record?

        False only for records written after this member took the partition
        over: handlers may skip their "was this already done?" lookup for those,
        which in steady state is nearly all of them.
        """
        part = self._partitions.get(TopicPartition(record.topic, record.partition))
        return part is None or record.offset < part.replay_below

    # -- fetching ------------------------------------------------------------------

    async def _fetch_loop(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        limit = self.config.max_in_flight
        while not self._stopping:
            room = limit - self._in_flight
            if room <= 0:
                # Keep polling (it keeps us in the group) but take nothing new.
                if not self._paused:
                    consumer.pause(*consumer.assignment())
                    self._paused = True
            elif self._paused:
                consumer.resume(*consumer.assignment())
                self._paused = False
            try:
                batches = await consumer.getmany(timeout_ms=100, max_records=max(room, 1))
            except KafkaError as exc:
                log.warning("%s: fetch failed: %s", self.config.name, exc)
                await asyncio.sleep(0.5)
                continue
            if room <= 0:
                continue
            for tp, records in batches.items():
                part = self._partitions.get(tp)
                if part is None or part.revoked:
                    continue
                for record in records:
                    part.unfinished[record.offset] = None
                    part.next_offset = record.offset + 1
                    self._enqueue(record, part)
            IN_FLIGHT.labels(**self._labels).set(self._in_flight)

    def _enqueue(self, record: Record, part: _Partition) -> None:
        self._in_flight += 1
        key = self._key_of(record)
        queue = self._queues.get(key)
        if queue is not None:
            queue.append((record, part))
            return
        self._queues[key] = deque([(record, part)])
        task = asyncio.create_task(self._drain(key))
        self._key_tasks.add(task)
        task.add_done_callback(self._key_tasks.discard)
        ACTIVE_KEYS.labels(**self._labels).set(len(self._queues))

    # -- handling ------------------------------------------------------------------

    async def _drain(self, key: object) -> None:
        queue = self._queues[key]
        try:
            while queue:
                record, part = queue[0]
                if not part.revoked:
                    part.running += 1
                    part.idle.clear()
                    try:
                        await self._handle(record)
                    finally:
                        part.running -= 1
                        if part.running == 0:
                            part.idle.set()
                queue.popleft()
                part.unfinished.pop(record.offset, None)
                self._in_flight -= 1
        finally:
            # Cancelled at shutdown: what is left stays uncommitted and is redone.
            self._in_flight -= len(queue)
            del self._queues[key]
            ACTIVE_KEYS.labels(**self._labels).set(len(self._queues))
            IN_FLIGHT.labels(**self._labels).set(self._in_flight)

    async def _handle(self, record: Record) -> None:
        if record.timestamp:
            DELAY.labels(**self._labels).observe(max(0.0, time.time() - record.timestamp / 1000))
        started = time.perf_counter()
        attempts = self.config.handler_attempts
        for attempt in range(1, attempts + 1):
            try:
                await self._handler(record)
            except asyncio.CancelledError:
                raise
            except Exception:
                if attempt == attempts:
                    # A poison record must not stall its partition forever: give up
                    # on it loudly, with its coordinates, and move on.
                    log.exception(
                        "%s: giving up on %s[%d]@%d after %d attempts",
                        self.config.name,
                        record.topic,
                        record.partition,
                        record.offset,
                        attempts,
                    )
                    PROCESSED.labels(outcome="failed", **self._labels).inc()
                    break
                log.warning(
                    "%s: handler failed on %s[%d]@%d (attempt %d), retrying",
                    self.config.name,
                    record.topic,
                    record.partition,
                    record.offset,
                    attempt,
                    exc_info=True,
                )
                await asyncio.sleep(min(0.2 * 2 ** (attempt - 1), 5.0))
            else:
                PROCESSED.labels(outcome="ok", **self._labels).inc()
                break
        HANDLE_TIME.labels(**self._labels).observe(time.perf_counter() - started)

    # -- committing ----------------------------------------------------------------

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.commit_interval_s)
            try:
                await self._commit()
            except KafkaError as exc:
                log.warning("%s: commit failed (will retry): %s", self.config.name, exc)

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

    async def _revoked(self, revoked: set[TopicPartition]) -> None:
        owned = [tp for tp in revoked if tp in self._partitions]
        for tp in owned:
            self._partitions[tp].revoked = True
        # The service first: work that waits on partition state (a gate, a
        # scheduled retry) must let go before we wait for running work.
        if self._on_revoked and owned:
            result = self._on_revoked(set(owned))
            if result is not None:
                await result
        running = [self._partitions[tp].idle.wait() for tp in owned if self._partitions[tp].running]
        if running:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*running), self.config.revoke_grace_s)
        try:
            await self._commit(owned)
        except KafkaError as exc:
            log.warning("%s: commit on revocation failed: %s", self.config.name, exc)
        for tp in owned:
            del self._partitions[tp]
        ASSIGNED.labels(**self._labels).set(len(self._partitions))

    async def _assigned(self, assigned: set[TopicPartition]) -> None:
        ends: dict[TopicPartition, int] = {}
        if self._consumer is not None and assigned:
            try:
                ends = await self._consumer.end_offsets(list(assigned))
            except KafkaError as exc:
                log.warning(
                    "%s: end offsets unknown, treating all as replays: %s", self.config.name, exc
                )
        for tp in assigned:
            if tp not in self._partitions:
                part = _Partition()
                part.idle.set()
                if tp in ends:
                    part.replay_below = ends[tp]
                self._partitions[tp] = part
        ASSIGNED.labels(**self._labels).set(len(self._partitions))
        if self._paused and self._consumer is not None:
            self._consumer.pause(*assigned)
        if self._on_assigned:
            result = self._on_assigned(set(assigned))
            if result is not None:
                await result
        self.assigned_event.set()


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, pipeline: KeyedPipeline) -> None:
        self._pipeline = pipeline

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._pipeline._revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._pipeline._assigned(set(assigned))
