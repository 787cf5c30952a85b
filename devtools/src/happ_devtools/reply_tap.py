"""Everything published to ``outbound.replies`` from now on, for tests and benchmarks.

Partitions are assigned by hand, not through a consumer group: a group join
takes seconds on the embedded broker.
"""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer, TopicPartition

from happ_common.events import OutboundReply
from happ_common.topics import OUTBOUND_REPLIES


class ReplyTap:
    def __init__(self, bootstrap: str) -> None:
        self._consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        # (time.monotonic() when fetched, the reply)
        self.seen: list[tuple[float, OutboundReply]] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        partitions = self._consumer.partitions_for_topic(OUTBOUND_REPLIES) or set()
        self._consumer.assign([TopicPartition(OUTBOUND_REPLIES, p) for p in partitions])
        await self._consumer.seek_to_end()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=100, max_records=5000)
            now = time.monotonic()
            for records in batches.values():
                for r in records:
                    self.seen.append((now, OutboundReply.model_validate_json(r.value)))

    def timed(self, channel_id: str) -> list[tuple[float, OutboundReply]]:
        return [(t, r) for t, r in self.seen if r.channel_id == channel_id]

    def of(self, channel_id: str) -> list[OutboundReply]:
        return [r for _, r in self.timed(channel_id)]

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self._consumer.stop()
