"""Publishing events to Kafka, always with ``acks=all``.

FastStream's ``KafkaBroker`` owns the producer: it gives the publish path its
middleware (Prometheus metrics) and lets the AsyncAPI document describe what
each service publishes. A publish returns only after the broker acknowledged
the write on all in-sync replicas; it raises ``PublishFailed`` when that did not
happen in time, so callers never mistake "sent" for "stored".
"""

from __future__ import annotations

import asyncio

from faststream.kafka import KafkaBroker
from pydantic import BaseModel

from happ_common.settings import InfraSettings


class PublishFailed(Exception):
    """The broker did not acknowledge the write."""


class EventPublisher:
    def __init__(self, infra: InfraSettings, *, client_id: str, timeout_s: float = 5.0) -> None:
        self._timeout = timeout_s
        self.broker = KafkaBroker(
            infra.kafka_bootstrap_servers,
            acks="all",
            client_id=client_id,
            # Keep sends pipelined: many requests in flight share batches.
            linger_ms=1,
            request_timeout_ms=int(timeout_s * 1000),
            enable_idempotence=False,
        )

    async def start(self) -> None:
        await self.broker.connect()

    async def stop(self) -> None:
        await self.broker.stop()

    async def publish(self, topic: str, event: BaseModel, key: bytes) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                await self.broker.publish(
                    event.model_dump_json().encode(),
                    topic,
                    key=key,
                    headers={"content-type": "application/json"},
                )
        except Exception as exc:
            raise PublishFailed(f"{type(exc).__name__}: {exc}") from exc

    async def ping(self) -> None:
        if not await self.broker.ping(timeout=2.0):
            raise PublishFailed("Kafka broker unreachable")
