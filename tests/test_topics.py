"""The topic layout the consumers rely on, checked at startup against the real
embedded broker: every topic keyed by conversation with KAFKA_PARTITIONS
partitions, or the assistant and the delivery service refuse to start."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from happ_common.settings import InfraSettings
from happ_common.topics import (
    ALL_TOPICS,
    DEAD_LETTER_TOPICS,
    TopicLayoutError,
    check_topic_layout,
    ensure_topics,
    topic_configs,
)
from happ_devtools.local_stack import SERVICES
from happ_devtools.procs import PYTHON, Child, free_port, wait_until
from tests.conftest import System


def infra(system: System, partitions: int) -> InfraSettings:
    return InfraSettings(
        kafka_bootstrap_servers=system.stack.kafka_bootstrap, kafka_partitions=partitions
    )


def unique_topics() -> tuple[str, str, str]:
    prefix = f"layout-{uuid.uuid4().hex[:8]}"  # the session's own topics stay untouched
    return (f"{prefix}.inbound", f"{prefix}.replies", f"{prefix}.retry")


async def test_topics_of_one_count_equal_to_kafka_partitions_pass(system: System) -> None:
    topics = unique_topics()
    await ensure_topics(infra(system, 3), topics)
    await check_topic_layout(infra(system, 3), topics)
    await check_topic_layout(infra(system, 6))  # the session's stack, as its services see it


async def test_topics_of_different_counts_are_refused_naming_each_count(system: System) -> None:
    inbound, replies, retry = topics = unique_topics()
    await ensure_topics(infra(system, 3), (inbound, replies))
    await ensure_topics(infra(system, 2), (retry,))
    with pytest.raises(TopicLayoutError) as refused:
        await check_topic_layout(infra(system, 3), topics)
    message = str(refused.value)
    assert f"{inbound} has 3 partitions" in message
    assert f"{replies} has 3 partitions" in message
    assert f"{retry} has 2 partitions" in message
    assert "KAFKA_PARTITIONS is 3" in message
    assert "Recreate" in message  # and says what to do


async def test_topics_agreeing_with_each_other_but_not_kafka_partitions_are_refused(
    system: System,
) -> None:
    topics = unique_topics()
    await ensure_topics(infra(system, 2), topics)
    with pytest.raises(TopicLayoutError) as refused:
        await check_topic_layout(infra(system, 4), topics)
    message = str(refused.value)
    assert all(f"{t} has 2 partitions" in message for t in topics)
    assert "KAFKA_PARTITIONS=2" in message  # the way out that keeps the records


async def test_a_missing_topic_is_refused(system: System) -> None:
    inbound, replies, retry = topics = unique_topics()
    await ensure_topics(infra(system, 3), (inbound, replies))
    with pytest.raises(TopicLayoutError) as refused:
        await check_topic_layout(infra(system, 3), topics)
    assert f"{retry} is missing" in str(refused.value)


async def test_every_service_refuses_to_start_on_another_partition_count_saying_why(
    system: System,
) -> None:
    # The session's topics have 6 partitions; these processes are told 5. They
    # must stop before joining their consumer groups (the session's services'
    # groups, so a service that did start would only take partitions, not
    # handle messages twice).
    env = {
        **system.stack.env(),
        "KAFKA_PARTITIONS": "5",
        **{f"HAPP_{name.upper()}_PORT": str(free_port()) for name in SERVICES},
    }
    children = [
        Child(
            f"layout-{name}",
            [PYTHON, "-m", f"happ_{name}"],
            env=env,
            log_path=system.stack.logs / f"layout-{name}.log",
        ).start()
        for name in SERVICES
    ]
    try:
        await asyncio.to_thread(
            wait_until,
            lambda: all(c.poll() is not None for c in children),
            90,
            "every service to refuse the topic layout",
        )
        for child in children:
            assert child.poll() != 0
            log = child.tail(400)
            (refusal,) = [line for line in log.splitlines() if "refusing to start" in line]
            assert '"level": "CRITICAL"' in refusal, refusal
            assert "inbound.messages has 6 partitions" in refusal
            assert "KAFKA_PARTITIONS is 5" in refusal
    finally:
        for child in children:
            await asyncio.to_thread(child.stop)


async def test_missing_dead_letter_topics_are_refused(system: System) -> None:
    with pytest.raises(TopicLayoutError, match=r"Dead-letter topics missing: nowhere\.dlq"):
        await check_topic_layout(infra(system, 6), dead_letter_topics=("nowhere.dlq",))


async def test_topics_are_created_with_min_insync_replicas_and_explicit_retention(
    system: System,
) -> None:
    """The session's own topics, as the stack created them: acks=all means two copies
    on a cluster that has them, and the broker's default retention is not trusted."""
    from aiokafka.admin import AIOKafkaAdminClient  # noqa: PLC0415
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType  # noqa: PLC0415

    settings = infra(system, 6)
    admin = AIOKafkaAdminClient(bootstrap_servers=system.stack.kafka_bootstrap)
    await admin.start()
    try:
        (response,) = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, t) for t in ALL_TOPICS]
        )
    finally:
        await admin.close()
    configs = {
        name: {entry[0]: entry[1] for entry in entries}
        for _err, _msg, _type, name, entries in response.resources
    }
    week, month = 168 * 3600 * 1000, 720 * 3600 * 1000
    for topic in ALL_TOPICS:
        assert configs[topic]["min.insync.replicas"] == "1"  # replication factor 1 here
        retention = month if topic in DEAD_LETTER_TOPICS else week
        assert configs[topic]["retention.ms"] == str(retention), topic
    assert (
        topic_configs(settings.model_copy(update={"kafka_replication_factor": 3}), "x")[
            "min.insync.replicas"
        ]
        == "2"
    )
