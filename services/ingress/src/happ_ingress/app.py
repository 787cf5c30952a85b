"""The ingress application: the lifespan owns every client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from happ_common import mongo
from happ_common.channels import ChannelCache, ChannelRepository
from happ_common.errors import install_error_handlers
from happ_common.http_metrics import HttpMetrics
from happ_common.kafka import EventPublisher
from happ_common.ops import ops_router
from happ_common.request_log import RequestLogWriter
from happ_common.settings import HappSettings, InfraSettings
from happ_ingress.endpoints import router
from happ_ingress.repository import IdempotencyRepository
from happ_ingress.service import IngressService
from happ_ingress.settings import IngressSettings


def create_app(
    settings: IngressSettings | None = None,
    infra: InfraSettings | None = None,
    happ: HappSettings | None = None,
) -> FastAPI:
    settings = settings or IngressSettings()
    infra = infra or InfraSettings()
    happ = happ or HappSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = mongo.connect(infra)
        db = mongo.database(client, infra)
        publisher = EventPublisher(
            infra, client_id="happ-ingress", timeout_s=settings.publish_timeout_s
        )
        request_log = RequestLogWriter(db)
        await publisher.start()
        await request_log.start()
        app.state.service = IngressService(
            settings,
            ChannelCache(ChannelRepository(db), happ.channel_cache_ttl_s),
            IdempotencyRepository(db),
            publisher,
            request_log,
        )
        app.state.checks = {"kafka": publisher.ping, "mongodb": lambda: mongo.ping(db)}
        try:
            yield
        finally:
            await request_log.stop()
            await publisher.stop()
            await client.close()

    app = FastAPI(
        title="HAPP ingress",
        summary="Incoming webhooks: each user message onto inbound.messages.",
        version="1.0.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.add_middleware(HttpMetrics, service="ingress")
    app.include_router(router)
    app.include_router(ops_router(lambda: app.state.checks))
    return app
