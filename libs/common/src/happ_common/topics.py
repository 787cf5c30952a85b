"""Topic names, their creation, and the check of their layout.

The embedded broker cannot add partitions later (no CreatePartitions), so topics
are created explicitly, with their final partition count, before any service
produces to them. Topics that exist already are left alone, so the consumers
check at startup that they are laid out as they assume (``check_topic_layout``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from happ_common.kafka_connection import client_options
from happ_common.settings import InfraSettings

INBOUND_MESSAGES = "inbound.messages"
OUTBOUND_REPLIES = "outbound.replies"
DELIVERY_RETRY = "delivery.retry"

# Read together, keyed alike: these must have the same number of partitions.
PIPELINE_TOPICS = (INBOUND_MESSAGES, OUTBOUND_REPLIES, DELIVERY_RETRY)


# Where each consumer parks the records it can never handle (``dead_letters``).
def dead_letter_topic(topic: str) -> str:
    return f"{topic}.dlq"


DEAD_LETTER_TOPICS = tuple(dead_letter_topic(t) for t in PIPELINE_TOPICS)
ALL_TOPICS = (*PIPELINE_TOPICS, *DEAD_LETTER_TOPICS)

log = logging.getLogger(__name__)


class TopicLayoutError(Exception):
    """The topics keyed by conversation do not all have KAFKA_PARTITIONS partitions."""


@contextlib.asynccontextmanager
async def _admin(infra: InfraSettings) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(**client_options(infra), client_id="happ-topics")
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


async def ensure_topics(infra: InfraSettings, topics: tuple[str, ...] = ALL_TOPICS) -> None:
    """Create the topics that do not exist yet; leave existing ones alone."""
    async with _admin(infra) as admin:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if not missing:
            return
        response = await admin.create_topics(
            [
                NewTopic(
                    t,
                    infra.kafka_partitions,
                    infra.kafka_replication_factor,
                    topic_configs=topic_configs(infra, t),
                )
                for t in missing
            ]
        )
        # The broker answers per topic rather than raising. Another process may win
        # the race (TopicAlreadyExists): the topic is there either way.
        failed = [
            # (topic, error_code[, error_message]) depending on the response's version
            f"{entry[0]}: {(entry[2] if len(entry) > 2 else None) or f'error {entry[1]}'}"
            for entry in response.topic_errors
            if entry[1] not in (0, TopicAlreadyExistsError.errno)
        ]
        if failed:
            raise TopicLayoutError(
                f"Could not create the missing topics ({'; '.join(failed)}): create them "
                "yourself as deploy/k8s/README.md says, or grant HAPP's principal CREATE "
                "on the cluster."
            )
        log.info(
            "created topics %s with %d partitions, replication factor %d",
            missing,
            infra.kafka_partitions,
            infra.kafka_replication_factor,
        )


def topic_configs(infra: InfraSettings, topic: str) -> dict[str, str]:
    """What a topic HAPP creates is configured with, rather than the broker's defaults.

    ``acks=all`` waits only for the in-sync replicas: with ``min.insync.replicas``
    at 1 a write acknowledged by a lone leader is lost with that broker. Two (or
    the replication factor, if smaller) makes the webhook's 200 mean two copies.
    Retention is explicit so that a broker default of hours cannot delete
    records a long outage left unconsumed; dead letters wait for a person.
    """
    hours = (
        infra.kafka_dead_letter_retention_hours
        if topic in DEAD_LETTER_TOPICS
        else infra.kafka_retention_hours
    )
    return {
        "min.insync.replicas": str(min(2, infra.kafka_replication_factor)),
        "retention.ms": str(int(hours * 3600 * 1000)),
        "cleanup.policy": "delete",
    }


async def check_topic_layout(
    infra: InfraSettings,
    topics: tuple[str, ...] = PIPELINE_TOPICS,
    dead_letter_topics: tuple[str, ...] = DEAD_LETTER_TOPICS,
) -> None:
    """Raise ``TopicLayoutError`` unless each topic exists with KAFKA_PARTITIONS partitions.

    A conversation's key must land on the same partition number in every topic:
    the delivery service reads outbound.replies and delivery.retry co-partitioned
    (range assignor), and its gates hold a conversation's replies by partition.
    With different counts it would deliver out of order, silently.
    """
    async with _admin(infra) as admin:
        # Every topic's metadata: asking for ours by name may create missing ones.
        described = await admin.describe_topics()
    counts = {t["topic"]: len(t["partitions"]) for t in described if not t["error_code"]}
    layout = {t: counts.get(t) for t in topics}
    if any(n != infra.kafka_partitions for n in layout.values()):
        raise TopicLayoutError(_layout_problem(layout, infra.kafka_partitions))
    if missing := [t for t in dead_letter_topics if t not in counts]:
        raise TopicLayoutError(
            f"Dead-letter topics missing: {', '.join(missing)}; a record that can never be "
            "handled would be retried forever instead of parked. Create them (any partition "
            "count) or let HAPP create them (its principal needs CREATE on the cluster)."
        )


def _layout_problem(layout: dict[str, int | None], wanted: int) -> str:
    found = "; ".join(
        f"{t} is missing" if n is None else f"{t} has {n} partitions" for t, n in layout.items()
    )
    problem = (
        f"Topics not laid out as HAPP needs: {found}; KAFKA_PARTITIONS is {wanted}. Each "
        "must have KAFKA_PARTITIONS partitions, so that a conversation's records land on "
        "the same partition number in every topic (the delivery service reads "
        "outbound.replies and delivery.retry together, partition by partition)."
    )
    counts = set(layout.values())
    if len(counts) == 1 and None not in counts:
        return (
            f"{problem} They agree with each other: set KAFKA_PARTITIONS={counts.pop()} for "
            f"every service, or drain the topics and recreate them with {wanted} partitions."
        )
    return (
        f"{problem} Recreate the topics that differ with {wanted} partitions once they are "
        "drained (deleting a topic loses its records; adding partitions moves keys to other "
        "partitions), then start the services again."
    )
