"""The keyed pipeline against the real broker: random durations and failures,
then per-key order, no loss, bounded in-flight work, and commits that never pass
an unfinished record."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import defaultdict
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from happ_common.pipeline import KeyedPipeline, PipelineConfig, Record
from tests.conftest import System, eventually

PARTITIONS = 4


async def _topic(bootstrap: str) -> str:
    name = f"pipeline-test-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, PARTITIONS, 1)])
    finally:
        await admin.close()
    return name


async def _produce(bootstrap: str, topic: str, keys: int, per_key: int) -> dict[bytes, list[bytes]]:
    """Interleaved records: key k gets values k:0, k:1, ... in that order."""
    sent: dict[bytes, list[bytes]] = defaultdict(list)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = []
        for i in range(per_key):
            for k in range(keys):
                key, value = f"k{k}".encode(), f"k{k}:{i}".encode()
                sent[key].append(value)
                futures.append(await producer.send(topic, value, key=key))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return sent


def _config(system: System, topic: str, **kw: Any) -> PipelineConfig:
    return PipelineConfig(
        name=f"test-{topic[-8:]}",
        bootstrap_servers=system.stack.kafka_bootstrap,
        group_id=f"group-{topic}",
        topics=(topic,),
        commit_interval_s=0.05,
        session_timeout_ms=6000,
        **kw,
    )


@pytest.mark.parametrize("seed", [1, 2])
async def test_order_no_loss_bounded_and_commits_never_pass_unfinished_work(
    system: System, seed: int
) -> None:
    rng = random.Random(seed)
    topic = await _topic(system.stack.kafka_bootstrap)
    sent = await _produce(system.stack.kafka_bootstrap, topic, keys=40, per_key=25)
    total = sum(len(v) for v in sent.values())

    done: dict[bytes, list[bytes]] = defaultdict(list)
    unfinished: dict[int, set[int]] = defaultdict(set)  # partition -> offsets seen, not done
    finished: dict[int, set[int]] = defaultdict(set)
    running_keys: set[bytes] = set()
    concurrent = peak = 0
    failed_once: set[tuple[int, int]] = set()
    violations: list[str] = []
    bound = 64

    async def handler(record: Record) -> None:
        nonlocal concurrent, peak
        assert record.key is not None and record.value is not None
        if record.key in running_keys:
            violations.append(f"two records of {record.key!r} ran at once")
        running_keys.add(record.key)
        unfinished[record.partition].add(record.offset)
        concurrent += 1
        peak = max(peak, concurrent)
        try:
            await asyncio.sleep(rng.random() * 0.01)
            if rng.random() < 0.1 and (record.partition, record.offset) not in failed_once:
                failed_once.add((record.partition, record.offset))
                raise RuntimeError("transient failure")  # the pipeline retries it
            done[record.key].append(record.value)
            finished[record.partition].add(record.offset)
            unfinished[record.partition].discard(record.offset)
        finally:
            concurrent -= 1
            running_keys.discard(record.key)

    pipeline = KeyedPipeline(_config(system, topic, max_in_flight=bound), handler)
    await pipeline.start()
    assert pipeline._consumer is not None
    real_commit = pipeline._consumer.commit

    async def checked_commit(offsets: dict[TopicPartition, Any]) -> None:
        for tp, meta in offsets.items():
            # Everything below the committed offset must be finished.
            below = {o for o in unfinished[tp.partition] if o < meta.offset}
            if below:
                violations.append(
                    f"commit {meta.offset} on p{tp.partition} passes unfinished {sorted(below)[:3]}"
                )
            if any(o not in finished[tp.partition] for o in range(meta.offset)):
                missing = [o for o in range(meta.offset) if o not in finished[tp.partition]][:3]
                violations.append(
                    f"commit {meta.offset} on p{tp.partition} passes unhandled {missing}"
                )
        await real_commit(offsets)

    pipeline._consumer.commit = checked_commit
    try:
        await eventually(lambda: _true(sum(len(v) for v in done.values()) >= total), timeout_s=60)
        committed = await eventually_committed(pipeline, topic, total)
    finally:
        await pipeline.stop()

    assert not violations, violations[:5]
    assert dict(done) == dict(sent)  # nothing lost, nothing twice, every key in order
    assert peak <= bound
    assert committed == total
    assert failed_once, "the run exercised handler failures"


async def _true(value: bool) -> bool:
    return value


async def eventually_committed(pipeline: KeyedPipeline, topic: str, total: int) -> int:
    assert pipeline._consumer is not None
    consumer = pipeline._consumer

    async def sum_committed() -> int:
        values = [await consumer.committed(TopicPartition(topic, p)) for p in range(PARTITIONS)]
        return sum(v or 0 for v in values)

    async def all_committed() -> bool:
        return await sum_committed() == total

    await eventually(all_committed, timeout_s=10)
    return await sum_committed()


async def test_a_member_that_dies_mid_stream_loses_nothing(system: System) -> None:
    topic = await _topic(system.stack.kafka_bootstrap)
    sent = await _produce(system.stack.kafka_bootstrap, topic, keys=10, per_key=30)
    total = sum(len(v) for v in sent.values())
    handled: dict[bytes, list[bytes]] = defaultdict(list)
    first_done = asyncio.Event()

    async def slow(record: Record) -> None:
        assert record.key is not None and record.value is not None
        await asyncio.sleep(0.01)
        handled[record.key].append(record.value)
        if sum(len(v) for v in handled.values()) >= total // 3:
            first_done.set()

    first = KeyedPipeline(_config(system, topic, max_in_flight=16), slow)
    await first.start()
    await asyncio.wait_for(first_done.wait(), 60)
    # Die without a goodbye: no final commit, no leave-group; the work in flight
    # and everything uncommitted must reach the next member.
    first._commit = _no_commit  # type: ignore[method-assign]
    assert first._consumer is not None
    await first.stop(grace_s=0)

    async def fast(record: Record) -> None:
        assert record.key is not None and record.value is not None
        handled[record.key].append(record.value)

    second = KeyedPipeline(_config(system, topic), fast)
    await second.start()
    try:

        async def all_seen() -> bool:
            return all(set(handled[k]) == set(v) for k, v in sent.items())

        await eventually(all_seen, timeout_s=60)
    finally:
        await second.stop()
    for key, values in sent.items():
        # At least once, and the last time each value was handled respects the order.
        last_seen = {v: i for i, v in enumerate(handled[key])}
        assert sorted(values, key=lambda v: last_seen[v]) == values


async def _no_commit(*_: Any, **__: Any) -> None:
    return None
