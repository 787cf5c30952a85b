"""A consumer service's keyed pipeline, built the one way both consumers build it.

The assistant and the delivery service each read their subscriptions
(``happ_common.subscriptions``) in a ``KeyedPipeline`` connected as the shared
settings say, in their own consumer group, and dead-letter what they can never
handle under their own name. What differs between them (parked budgets, grace
on revoke, partition callbacks) is passed through.
"""

from __future__ import annotations

from typing import Any, Protocol

from happ_common.dead_letters import DeadLetterPublisher
from happ_common.kafka import Publisher
from happ_common.kafka_connection import client_options
from happ_common.pipeline import GroupFunction, KeyedPipeline, PartitionsCallback, PipelineConfig
from happ_common.settings import InfraSettings
from happ_common.subscriptions import Subscriptions


class ConsumerSettings(Protocol):
    """What a consumer service's settings say about its consumer."""

    @property
    def group_id(self) -> str: ...
    @property
    def max_in_flight(self) -> int: ...


def consumer_pipeline(
    name: str,
    reads: Subscriptions,
    settings: ConsumerSettings,
    infra: InfraSettings,
    publisher: Publisher,
    *,
    on_assigned: PartitionsCallback | None = None,
    on_revoked: PartitionsCallback | None = None,
    group_of: GroupFunction | None = None,
    **config: Any,
) -> KeyedPipeline:
    """``reads`` in the consumer group ``settings`` name; ``config``: the other
    ``PipelineConfig`` fields this consumer sets."""
    return KeyedPipeline(
        PipelineConfig(
            name=name,
            connection=client_options(infra),
            group_id=settings.group_id,
            topics=reads.topics,
            max_in_flight=settings.max_in_flight,
            session_timeout_ms=infra.kafka_session_timeout_ms,
            consumer_options={"fetch_max_wait_ms": infra.kafka_fetch_max_wait_ms},
            **config,
        ),
        reads.handle,
        key_of=reads.key_of,
        group_of=group_of,
        on_assigned=on_assigned,
        on_revoked=on_revoked,
        dead_letters=DeadLetterPublisher(publisher, name),
    )
