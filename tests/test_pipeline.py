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
from bson.errors import InvalidDocument

from happ_common.pipeline import KeyedPipeline, PipelineConfig, PoisonRecord, Record, parked
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
        connection={"bootstrap_servers": system.stack.kafka_bootstrap},
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


# -- what the pipeline must never do, each placed exactly ----------------------------


async def _one_partition_topic(system: System) -> str:
    name = f"pipeline-fault-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=system.stack.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 1, 1)])
    finally:
        await admin.close()
    return name


async def _send_values(system: System, topic: str, pairs: list[tuple[str, str]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=system.stack.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in pairs:
            await producer.send_and_wait(topic, value.encode(), key=key.encode())
    finally:
        await producer.stop()


async def _committed(pipeline: KeyedPipeline, topic: str) -> int | None:
    assert pipeline._consumer is not None
    value = await pipeline._consumer.committed(TopicPartition(topic, 0))
    return int(value) if value is not None else None


def _value(record: Record) -> str:
    assert record.value is not None
    return record.value.decode()


async def test_a_revocation_never_commits_records_queued_behind_a_running_one(
    system: System,
) -> None:
    topic = await _one_partition_topic(system)
    # Offsets: 0 k:0 (running at the revocation), 1 k:1 (queued behind it), 2 j:0.
    await _send_values(system, topic, [("k", "k:0"), ("k", "k:1"), ("j", "j:0")])
    release = asyncio.Event()
    handled: list[str] = []

    async def handler(record: Record) -> None:
        if _value(record) == "k:0":
            await release.wait()
        handled.append(_value(record))

    first = KeyedPipeline(_config(system, topic, revoke_grace_s=5.0), handler)
    await first.start()
    await eventually(lambda: _true(handled == ["j:0"]), timeout_s=30)
    tp = TopicPartition(topic, 0)
    revoking = asyncio.create_task(first._revoked({tp}))
    await asyncio.sleep(0.2)
    release.set()  # k:0 finishes within the grace period; k:1 is never started
    await revoking
    assert handled == ["j:0", "k:0"]
    assert await _committed(first, topic) == 1  # not 3: k:1 was never handled
    await first.stop()

    second_handled: list[str] = []

    async def second_handler(record: Record) -> None:
        second_handled.append(_value(record))

    second = KeyedPipeline(_config(system, topic), second_handler)
    await second.start()
    try:
        await eventually(lambda: _true("k:1" in second_handled), timeout_s=30)
    finally:
        await second.stop()
    assert second_handled[0] == "k:1"


async def test_work_still_running_after_the_grace_period_is_cut_off_and_left_unfinished(
    system: System,
) -> None:
    topic = await _one_partition_topic(system)
    await _send_values(system, topic, [("slow", "s:0"), ("fast", "f:0")])
    started, cut_off = asyncio.Event(), asyncio.Event()

    async def handler(record: Record) -> None:
        if _value(record) == "s:0":
            started.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cut_off.set()
                raise

    pipeline = KeyedPipeline(_config(system, topic, revoke_grace_s=0.3), handler)
    await pipeline.start()
    try:
        await asyncio.wait_for(started.wait(), 30)
        await asyncio.wait_for(pipeline._revoked({TopicPartition(topic, 0)}), 10)
        assert cut_off.is_set()
        assert await _committed(pipeline, topic) in (None, 0)
    finally:
        await pipeline.stop()


async def test_an_outage_is_retried_for_as_long_as_it_lasts_and_never_skipped(
    system: System,
) -> None:
    topic = await _one_partition_topic(system)
    await _send_values(system, topic, [("k", "k:0"), ("k", "k:1"), ("j", "j:0")])
    failures = {"k:0": 12}  # more than any fixed number of attempts would allow
    handled: list[str] = []
    commits_during_outage: list[int | None] = []

    async def handler(record: Record) -> None:
        value = _value(record)
        if failures.get(value, 0) > 0:
            failures[value] -= 1
            commits_during_outage.append(await _committed(pipeline, topic))
            raise ConnectionError("database away")
        handled.append(value)

    pipeline = KeyedPipeline(
        _config(system, topic, retry_backoff_s=0.01, retry_backoff_max_s=0.05), handler
    )
    await pipeline.start()
    try:
        await eventually(lambda: _true(len(handled) == 3), timeout_s=30)
        await eventually(lambda: _committed_is(pipeline, topic, 3), timeout_s=10)
    finally:
        await pipeline.stop()
    assert [v for v in handled if v.startswith("k")] == ["k:0", "k:1"]
    assert failures["k:0"] == 0
    assert all(c in (None, 0) for c in commits_during_outage), commits_during_outage


async def _committed_is(pipeline: KeyedPipeline, topic: str, offset: int) -> bool:
    return await _committed(pipeline, topic) == offset


async def test_a_poison_record_is_dead_lettered_once_the_sink_takes_it(system: System) -> None:
    topic = await _one_partition_topic(system)
    await _send_values(system, topic, [("k", "poison"), ("k", "k:1")])
    parked: list[tuple[str, str]] = []
    sink_failures = [2]  # the dead-letter topic is unreachable at first
    handled: list[str] = []

    async def handler(record: Record) -> None:
        if _value(record) == "poison":
            raise PoisonRecord("does not decode")
        handled.append(_value(record))

    async def sink(record: Record, error: BaseException) -> None:
        if sink_failures[0]:
            sink_failures[0] -= 1
            raise ConnectionError("broker away")
        parked.append((_value(record), str(error)))

    pipeline = KeyedPipeline(
        _config(system, topic, retry_backoff_s=0.01), handler, dead_letters=sink
    )
    await pipeline.start()
    try:
        await eventually(lambda: _true(handled == ["k:1"]), timeout_s=30)
        await eventually(lambda: _committed_is(pipeline, topic, 2), timeout_s=10)
    finally:
        await pipeline.stop()
    assert parked == [("poison", "does not decode")]


async def test_records_waiting_on_each_other_do_not_deadlock_the_budget(system: System) -> None:
    topic = await _one_partition_topic(system)
    # Four conversations wait for a gate that only a record behind them opens:
    # with a budget of 4 that record would never be fetched unless they park.
    waiting = [(f"g{i}", f"g{i}:{n}") for n in range(3) for i in range(4)]
    await _send_values(system, topic, [*waiting, ("opener", "open")])
    gate = asyncio.Event()
    handled: list[str] = []

    async def handler(record: Record) -> None:
        value = _value(record)
        if value == "open":
            gate.set()
        else:
            async with parked():
                await gate.wait()
        handled.append(value)

    pipeline = KeyedPipeline(_config(system, topic, max_in_flight=4), handler)
    await pipeline.start()
    try:
        await eventually(lambda: _true(len(handled) == len(waiting) + 1), timeout_s=30)
        assert pipeline.in_flight == 0 and pipeline.parked_bytes == 0
    finally:
        await pipeline.stop()
    for i in range(4):
        assert [v for v in handled if v.startswith(f"g{i}:")] == [f"g{i}:{n}" for n in range(3)]


async def test_parked_bytes_are_counted_per_group_and_return_to_zero(system: System) -> None:
    topic = await _one_partition_topic(system)
    # Two tenants: "a" with two conversations of three records, "b" with one,
    # which waits for something all groups share: not held against "b".
    pairs = [(f"a\n{c}", f"a{c}:{n}") for n in range(3) for c in "xy"] + [("b\nz", "bz:0")]
    await _send_values(system, topic, pairs)
    gate = asyncio.Event()
    handled: list[str] = []

    async def handler(record: Record) -> None:
        async with parked(of_group=not _value(record).startswith("b")):
            await gate.wait()
        handled.append(_value(record))

    def tenant(record: Record) -> str:
        assert record.key is not None
        return record.key.split(b"\n", 1)[0].decode()

    pipeline = KeyedPipeline(_config(system, topic), handler, group_of=tenant)
    await pipeline.start()
    try:

        async def all_parked() -> bool:
            groups = pipeline.parked_bytes_by_group()
            # Records of equal sizes: six of "a" and one of "b", all parked.
            return set(groups) == {"a"} and 7 * groups["a"] == 6 * pipeline.parked_bytes

        await eventually(all_parked, timeout_s=30)
        gate.set()
        await eventually(lambda: _true(len(handled) == len(pairs)), timeout_s=30)
        assert pipeline.parked_bytes_by_group() == {} and pipeline.parked_bytes == 0
    finally:
        await pipeline.stop()


async def test_nothing_is_handed_out_before_the_assignment_callback_has_finished(
    system: System,
) -> None:
    topic = await _one_partition_topic(system)
    await _send_values(system, topic, [(f"k{i}", f"v{i}") for i in range(20)])
    restored = asyncio.Event()
    calls = [0]
    early: list[str] = []
    handled: list[str] = []

    async def on_assigned(_: set[TopicPartition]) -> None:
        calls[0] += 1
        if calls[0] == 1:
            raise ConnectionError("database away")  # retried, not skipped
        await asyncio.sleep(1.0)  # the fetcher has records meanwhile
        restored.set()

    async def handler(record: Record) -> None:
        if not restored.is_set():
            early.append(_value(record))
        handled.append(_value(record))

    pipeline = KeyedPipeline(
        _config(system, topic, retry_backoff_s=0.01), handler, on_assigned=on_assigned
    )
    await pipeline.start()
    try:
        await eventually(lambda: _true(len(handled) >= 20), timeout_s=30)
        await asyncio.sleep(0.3)
    finally:
        await pipeline.stop()
    assert not early
    assert sorted(handled) == sorted(f"v{i}" for i in range(20))  # each once
    assert calls[0] == 2


async def test_a_dead_fetch_loop_makes_the_member_unhealthy(system: System) -> None:
    topic = await _one_partition_topic(system)

    async def handler(record: Record) -> None:
        return None

    pipeline = KeyedPipeline(_config(system, topic), handler)
    await pipeline.start()
    try:
        assert pipeline.healthy()
        assert pipeline._fetch_task is not None
        pipeline._fetch_task.cancel()
        await asyncio.sleep(0.05)
        assert not pipeline.healthy()
    finally:
        await pipeline.stop()


async def test_an_unexplained_error_is_dead_lettered_after_a_few_tries_and_bson_at_once(
    system: System,
) -> None:
    topic = await _one_partition_topic(system)
    await _send_values(system, topic, [("a", "bug"), ("b", "unstorable"), ("a", "a:1")])
    tries: dict[str, int] = defaultdict(int)
    parked: list[str] = []
    handled: list[str] = []

    async def handler(record: Record) -> None:
        value = _value(record)
        tries[value] += 1
        if value == "bug":
            raise KeyError("a bug, not an outage")
        if value == "unstorable":
            raise InvalidDocument("Key names must not contain the NULL byte")
        handled.append(value)

    async def sink(record: Record, error: BaseException) -> None:
        parked.append(_value(record))

    pipeline = KeyedPipeline(
        _config(system, topic, retry_backoff_s=0.01, unknown_error_attempts=3),
        handler,
        dead_letters=sink,
    )
    await pipeline.start()
    try:
        await eventually(lambda: _true(handled == ["a:1"]), timeout_s=30)
        await eventually(lambda: _committed_is(pipeline, topic, 3), timeout_s=10)
    finally:
        await pipeline.stop()
    assert sorted(parked) == ["bug", "unstorable"]
    assert tries["bug"] == 3 and tries["unstorable"] == 1
