"""The admin application: the lifespan owns every client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from happ_admin.endpoints import router
from happ_admin.service import ChannelService
from happ_admin.settings import AdminSettings
from happ_common import mongo
from happ_common.channels import ChannelRepository
from happ_common.errors import install_error_handlers
from happ_common.http_metrics import HttpMetrics
from happ_common.kafka import EventPublisher
from happ_common.ops import ops_router
from happ_common.settings import HappSettings, InfraSettings


def create_app(
    settings: AdminSettings | None = None,
    infra: InfraSettings | None = None,
    happ: HappSettings | None = None,
) -> FastAPI:
    settings = settings or AdminSettings()
    infra = infra or InfraSettings()
    happ = happ or HappSettings()
    if not settings.tokens():
        raise SystemExit(
            "HAPP_ADMIN_TOKEN is not set: the admin API refuses to run without a token."
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = mongo.connect(infra)
        db = mongo.database(client, infra)
        await mongo.ensure_indexes(db, happ)
        publisher = EventPublisher(infra, client_id="happ-admin")
        await publisher.start()
        app.state.channels = ChannelService(ChannelRepository(db), happ)
        app.state.checks = {"kafka": publisher.ping, "mongodb": lambda: mongo.ping(db)}
        try:
            yield
        finally:
            await publisher.stop()
            await client.close()

    app = FastAPI(
        title="HAPP admin",
        summary="Channels, request log, conversations and the web UI.",
        version="1.0.0",
        lifespan=lifespan,
    )
    app.state.tokens = settings.tokens()
    app.state.happ = happ
    install_error_handlers(app)
    app.add_middleware(HttpMetrics, service="admin")
    app.include_router(router)
    app.include_router(ops_router(lambda: app.state.checks))
    return app
