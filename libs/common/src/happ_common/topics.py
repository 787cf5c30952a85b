"""Topic names and their creation.

The embedded broker cannot add partitions later (no CreatePartitions), so topics
are created explicitly, with their final partition count, before any service
produces to them.
"""

from __future__ import annotations

import contextlib
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

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


async def ensure_topics(infra: InfraSettings, topics: tuple[str, ...] = ALL_TOPICS) -> None:
    """Create the topics that do not exist yet; leave existing ones alone."""
    admin = AIOKafkaAdminClient(bootstrap_servers=infra.kafka_bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if not missing:
            return
        # Another process may win the race; the topic is there either way.
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics(
                [
                    NewTopic(t, infra.kafka_partitions, infra.kafka_replication_factor)
                    for t in missing
                ]
            )
        log.info("created topics %s with %d partitions", missing, infra.kafka_partitions)
    finally:
        await admin.close()
