"""Publishing events to Kafka, always with ``acks=all``.

A publish returns only after the broker acknowledged the write on all in-sync
replicas; it raises ``PublishFailed`` when that did not happen in time, so
callers never mistake "sent" for "stored".

Two implementations of one interface. The workers publish through FastStream's
``KafkaBroker``. The ingress publishes once per webhook request, its hot path,
and there aiokafka's producer is used directly: with 64 publishes in flight,
FastStream's publish path costs about 25-50 % more CPU per message than
aiokafka's (``make bench-publish``; numbers in ``docs/benchmarks.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import InvalidProducerEpoch, OutOfOrderSequenceNumber, UnknownProducerId
from faststream.kafka import KafkaBroker
from prometheus_client import Counter, Histogram
from pydantic import BaseModel

from happ_common import tracing
from happ_common.kafka_connection import client_options, faststream_security
from happ_common.settings import InfraSettings

log = logging.getLogger(__name__)

PUBLISH_TIME = Histogram(
    "happ_kafka_publish_seconds",
    "From send to the broker's acks=all acknowledgement",
    ["topic"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
PUBLISH_FAILURES = Counter(
    "happ_kafka_publish_failures_total", "Publishes the broker did not acknowledge", ["topic"]
)


class PublishFailed(Exception):
    """The broker did not acknowledge the write."""


class Publisher(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def publish(self, topic: str, event: BaseModel, key: bytes) -> None: ...

    async def publish_raw(
        self, topic: str, value: bytes, key: bytes | None, headers: dict[str, str]
    ) -> None: ...

    async def ping(self) -> None: ...


_HEADERS = [("content-type", b"application/json")]


class DirectPublisher:
    """aiokafka's producer, for the ingress's hot path.

    It starts even while the broker is away (retrying in the background), so
    the ingress comes up and answers 503 until the broker is there, instead of
    crash-looping.
    """

    def __init__(self, infra: InfraSettings, *, client_id: str, timeout_s: float = 5.0) -> None:
        self._infra = infra
        self._client_id = client_id
        self._timeout = timeout_s
        self._producer: AIOKafkaProducer | None = None
        self._starting: asyncio.Task[None] | None = None

    def _new_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            **client_options(self._infra),
            client_id=self._client_id,
            acks="all",
            # Not idempotent: an idempotent aiokafka producer never expires a batch,
            # so a publish the caller was already answered 503 for could still land
            # minutes later and, without a message_id, be answered twice. Repeats
            # are the idempotency claim's job here.
            enable_idempotence=False,
            linger_ms=1,  # concurrent requests share batches
            request_timeout_ms=int(self._timeout * 1000),
        )

    async def start(self) -> None:
        self._starting = asyncio.create_task(self._start_until_connected())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._starting), self._timeout)

    async def _start_until_connected(self) -> None:
        while True:
            producer = self._new_producer()
            try:
                await producer.start()
            except Exception as exc:
                log.warning("Kafka not reachable yet (%s); retrying", exc)
                await producer.stop()
                await asyncio.sleep(1.0)
                continue
            self._producer = producer
            return

    async def stop(self) -> None:
        if self._starting and not self._starting.done():
            self._starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._starting
        if self._producer is not None:
            await self._producer.stop()

    async def publish(self, topic: str, event: BaseModel, key: bytes) -> None:
        headers = _HEADERS
        if tracing.enabled():
            headers = _HEADERS + [(k, v.encode()) for k, v in tracing.outgoing_headers().items()]
        await self._send(topic, event.model_dump_json().encode(), key, headers)

    async def publish_raw(
        self, topic: str, value: bytes, key: bytes | None, headers: dict[str, str]
    ) -> None:
        headers = {**headers, **tracing.outgoing_headers()}
        await self._send(topic, value, key, [(k, v.encode()) for k, v in headers.items()])

    async def _send(
        self, topic: str, value: bytes, key: bytes | None, headers: list[tuple[str, bytes]]
    ) -> None:
        producer = self._producer
        if producer is None:
            PUBLISH_FAILURES.labels(topic).inc()
            raise PublishFailed("not connected to Kafka yet")
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout):
                await producer.send_and_wait(topic, value, key=key, headers=headers)
        except Exception as exc:
            PUBLISH_FAILURES.labels(topic).inc()
            raise PublishFailed(f"{type(exc).__name__}: {exc}") from exc
        PUBLISH_TIME.labels(topic).observe(time.perf_counter() - started)

    async def ping(self) -> None:
        producer = self._producer
        if producer is None:
            raise PublishFailed("not connected to Kafka yet")
        client = producer.client
        if not await asyncio.wait_for(client.ready(client.get_random_node()), 2.0):
            raise PublishFailed("Kafka broker unreachable")


# An idempotent producer whose sequence numbers fell out of step with the broker
# (a batch expired while a partition had no leader) fails every later publish to
# that partition and aiokafka does not recover (aio-libs/aiokafka#1017): only a new
# producer does, so the process reports itself dead and is restarted.
_PRODUCER_BROKEN = (OutOfOrderSequenceNumber, UnknownProducerId, InvalidProducerEpoch)


class EventPublisher:
    """FastStream's ``KafkaBroker``, for the workers."""

    def __init__(self, infra: InfraSettings, *, client_id: str, timeout_s: float = 10.0) -> None:
        self._timeout = timeout_s
        self.broken: str | None = None  # why this producer can publish no more
        self.broker = KafkaBroker(
            infra.kafka_bootstrap_servers,
            security=faststream_security(infra),
            acks="all",
            client_id=client_id,
            linger_ms=1,
            request_timeout_ms=int(timeout_s * 1000),
            # A resend after a lost acknowledgement is dropped by the broker
            # instead of duplicating a reply or a retry on the topic.
            enable_idempotence=infra.kafka_enable_idempotence,
        )

    async def start(self) -> None:
        await self.broker.connect()

    async def stop(self) -> None:
        await self.broker.stop()

    async def publish(self, topic: str, event: BaseModel, key: bytes) -> None:
        await self.publish_raw(
            topic, event.model_dump_json().encode(), key, {"content-type": "application/json"}
        )

    async def publish_raw(
        self, topic: str, value: bytes, key: bytes | None, headers: dict[str, str]
    ) -> None:
        started = time.perf_counter()
        headers = {**headers, **tracing.outgoing_headers()}
        try:
            async with asyncio.timeout(self._timeout):
                await self.broker.publish(value, topic, key=key, headers=headers)
        except Exception as exc:
            PUBLISH_FAILURES.labels(topic).inc()
            if isinstance(exc, _PRODUCER_BROKEN) and self.broken is None:
                self.broken = f"{type(exc).__name__} on {topic}"
                log.critical("the Kafka producer cannot recover (%s): restart", self.broken)
            raise PublishFailed(f"{type(exc).__name__}: {exc}") from exc
        PUBLISH_TIME.labels(topic).observe(time.perf_counter() - started)

    def healthy(self) -> bool:
        return self.broken is None

    async def ping(self) -> None:
        if self.broken is not None:
            raise PublishFailed(f"the producer is broken ({self.broken}); restart the process")
        if not await self.broker.ping(timeout=2.0):
            raise PublishFailed("Kafka broker unreachable")
