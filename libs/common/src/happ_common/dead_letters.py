"""Dead letters: records a consumer can never handle, parked where people see them.

A record that does not decode, or breaks a rule of its event, would fail the
same way on every try; retrying it forever would stall its partition, and
skipping it silently would lose it. So the pipeline parks it on its topic's
dead-letter topic (``<topic>.dlq``), byte for byte with its key, and headers
saying where it came from and why. The admin API lists them and can replay one
onto its original topic once the cause is fixed.
"""

from __future__ import annotations

from datetime import UTC, datetime

from happ_common.kafka import Publisher
from happ_common.pipeline import Record
from happ_common.topics import dead_letter_topic

# Headers of a dead letter: where it came from and why it is here.
ORIGIN_TOPIC = "happ-origin-topic"
ORIGIN_PARTITION = "happ-origin-partition"
ORIGIN_OFFSET = "happ-origin-offset"
CONSUMER = "happ-consumer"
ERROR = "happ-error"
PARKED_AT = "happ-parked-at"


class DeadLetterPublisher:
    """The pipeline's ``DeadLetterSink`` for one consumer."""

    def __init__(self, publisher: Publisher, consumer: str) -> None:
        self._publisher = publisher
        self._consumer = consumer

    async def __call__(self, record: Record, error: BaseException) -> None:
        headers = {
            ORIGIN_TOPIC: record.topic,
            ORIGIN_PARTITION: str(record.partition),
            ORIGIN_OFFSET: str(record.offset),
            CONSUMER: self._consumer,
            ERROR: f"{type(error).__name__}: {error}"[:2000],
            PARKED_AT: datetime.now(UTC).isoformat(),
        }
        await self._publisher.publish_raw(
            dead_letter_topic(record.topic), record.value or b"", record.key, headers
        )
