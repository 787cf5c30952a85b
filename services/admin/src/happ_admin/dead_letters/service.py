"""Dead letters (``happ_common.dead_letters``): listed from their topics, and
replayed onto the topic they came from.

They are read straight from the broker, without a consumer group: the topics
are small (only records that could never be handled land there) and the admin
reads them whole, newest last. A replay publishes the record again, byte for
byte with its key, to its original topic; the consumers' effects are
idempotent, so replaying one twice answers it once.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import datetime

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from happ_admin.dead_letters.schemas import DeadLetterOut
from happ_admin.errors import DEAD_LETTER_NOT_FOUND
from happ_common import dead_letters as dl
from happ_common.errors import HappError, service_unavailable
from happ_common.kafka import Publisher, PublishFailed
from happ_common.kafka_connection import client_options
from happ_common.settings import InfraSettings
from happ_common.topics import DEAD_LETTER_TOPICS

# What an idle poll means: the topic has nothing more for us.
_POLL_MS = 500
_MAX_SHOWN_VALUE = 64 * 1024


def dead_letter_not_found(dead_letter_id: str) -> HappError:
    return DEAD_LETTER_NOT_FOUND(
        f"No dead letter {dead_letter_id!r}; list them with GET /api/dead-letters.",
    )


def _parse_id(dead_letter_id: str) -> tuple[TopicPartition, int]:
    topic, _, rest = dead_letter_id.partition(":")
    partition, _, offset = rest.partition(":")
    if topic not in DEAD_LETTER_TOPICS or not partition.isdigit() or not offset.isdigit():
        raise dead_letter_not_found(dead_letter_id)
    return (TopicPartition(topic, int(partition)), int(offset))


def _headers(record: ConsumerRecord[bytes, bytes]) -> dict[str, str]:
    return {k: v.decode("utf-8", errors="replace") for k, v in record.headers or ()}


def _out(record: ConsumerRecord[bytes, bytes]) -> DeadLetterOut:
    headers = _headers(record)
    value = (record.value or b"")[:_MAX_SHOWN_VALUE].decode("utf-8", errors="replace")
    parked_at = headers.get(dl.PARKED_AT)
    return DeadLetterOut(
        id=f"{record.topic}:{record.partition}:{record.offset}",
        topic=record.topic,
        origin_topic=headers.get(dl.ORIGIN_TOPIC, record.topic.removesuffix(".dlq")),
        origin_partition=int(headers.get(dl.ORIGIN_PARTITION, "-1")),
        origin_offset=int(headers.get(dl.ORIGIN_OFFSET, "-1")),
        consumer=headers.get(dl.CONSUMER),
        error=headers.get(dl.ERROR),
        parked_at=datetime.fromisoformat(parked_at) if parked_at else None,
        key=(record.key or b"").decode("utf-8", errors="replace") or None,
        value=value,
    )


class DeadLetterService:
    def __init__(self, infra: InfraSettings, publisher: Publisher) -> None:
        self._infra = infra
        self._publisher = publisher

    @contextlib.asynccontextmanager
    async def _consumer(self) -> AsyncIterator[AIOKafkaConsumer]:
        consumer = AIOKafkaConsumer(
            **client_options(self._infra), group_id=None, enable_auto_commit=False
        )
        try:
            await consumer.start()
        except KafkaError as exc:
            raise service_unavailable("The broker is unreachable; retry shortly.") from exc
        try:
            yield consumer
        except KafkaError as exc:
            raise service_unavailable("The broker is unreachable; retry shortly.") from exc
        finally:
            await consumer.stop()

    async def list(self, limit: int) -> list[DeadLetterOut]:
        """The newest ``limit`` dead letters of every consumer, oldest first."""
        async with self._consumer() as consumer:
            await consumer.topics()  # metadata, for the partition counts
            tps = [
                TopicPartition(t, p)
                for t in DEAD_LETTER_TOPICS
                for p in sorted(consumer.partitions_for_topic(t) or ())
            ]
            if not tps:
                return []
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            found: list[ConsumerRecord[bytes, bytes]] = []
            while batches := await consumer.getmany(timeout_ms=_POLL_MS):
                for records in batches.values():
                    found.extend(records)
        found.sort(key=lambda r: (r.timestamp, r.topic, r.partition, r.offset))
        return [_out(r) for r in found[-limit:]]

    async def replay(self, dead_letter_id: str) -> DeadLetterOut:
        tp, offset = _parse_id(dead_letter_id)
        async with self._consumer() as consumer:
            await consumer.topics()
            if tp.partition not in (consumer.partitions_for_topic(tp.topic) or ()):
                raise dead_letter_not_found(dead_letter_id)
            consumer.assign([tp])
            consumer.seek(tp, offset)
            batch = await consumer.getmany(tp, timeout_ms=_POLL_MS * 4, max_records=1)
        record = next((r for r in batch.get(tp, []) if r.offset == offset), None)
        if record is None:
            raise dead_letter_not_found(dead_letter_id)
        letter = _out(record)
        try:
            await self._publisher.publish_raw(
                letter.origin_topic,
                record.value or b"",
                record.key,
                {"content-type": "application/json", "happ-replayed-from": dead_letter_id},
            )
        except PublishFailed as exc:
            raise service_unavailable("The replay could not be queued; retry shortly.") from exc
        return letter
