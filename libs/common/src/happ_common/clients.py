"""The clients every service opens at startup and closes at shutdown.

Each service's lifespan enters ``shared_clients`` and builds its own parts on
top: MongoDB (indexes ensured), the topics (created with their partition
count), a started publisher and the request-log writer, closed in reverse order
after the service's own parts have stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from pymongo.asynchronous.database import AsyncDatabase

from happ_common import mongo
from happ_common.kafka import Publisher
from happ_common.mongo import Document
from happ_common.ops import ReadinessCheck
from happ_common.request_log import RequestLogWriter
from happ_common.settings import HappSettings, InfraSettings
from happ_common.topics import TopicLayoutError, check_topic_layout, ensure_topics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Clients:
    db: AsyncDatabase[Document]
    publisher: Publisher
    request_log: RequestLogWriter
    infra: InfraSettings

    def readiness_checks(self) -> dict[str, ReadinessCheck]:
        return {"kafka": self.publisher.ping, "mongodb": lambda: mongo.ping(self.db)}


async def _topics_ready(infra: InfraSettings) -> None:
    """Create missing topics, then check all of them: every service refuses to start
    on a layout that would reorder or strand messages, saying why in one line."""
    await ensure_topics(infra)
    try:
        await check_topic_layout(infra)
    except TopicLayoutError as exc:
        log.critical("refusing to start: %s", exc)
        raise


@contextlib.asynccontextmanager
async def shared_clients(
    infra: InfraSettings,
    happ: HappSettings,
    publisher: Publisher,
    *,
    wait_for_infrastructure: bool = True,
    setup_timeout_s: float = 5.0,
) -> AsyncIterator[Clients]:
    """``wait_for_infrastructure=False`` (the ingress): indexes and topics are
    best effort, so the service comes up, and answers 503, while Kafka or
    MongoDB is away; the workers, which cannot work without them, create them."""
    client = mongo.connect(infra)
    db = mongo.database(client, infra)
    try:
        if wait_for_infrastructure:
            await mongo.ensure_indexes(db, happ)
            await _topics_ready(infra)
        else:
            try:
                await asyncio.wait_for(_topics_ready(infra), setup_timeout_s)
                await asyncio.wait_for(mongo.ensure_indexes(db, happ), setup_timeout_s)
            except TopicLayoutError:
                raise
            except Exception as exc:
                log.warning("starting without topics or indexes checked: %s", exc)
        await publisher.start()
        request_log = RequestLogWriter(db, max_bytes=happ.request_log_buffer_bytes)
        await request_log.start()
        try:
            yield Clients(db, publisher, request_log, infra)
        finally:
            await request_log.stop()
            await publisher.stop()
    finally:
        await client.close()
