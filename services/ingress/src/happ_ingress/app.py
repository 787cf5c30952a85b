"""The ingress application: the lifespan owns every client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware import Middleware

from happ_common.channels import ChannelCache, ChannelRepository
from happ_common.clients import shared_clients
from happ_common.kafka import DirectPublisher
from happ_common.kept_log_retention import KeptLogRetention
from happ_common.messages import ACCEPTED_REQUEST
from happ_common.mongo import MESSAGES
from happ_common.service_runtime import service_app, serving
from happ_common.settings import HappSettings, InfraSettings
from happ_ingress.endpoints import WebhookRoutes
from happ_ingress.openapi import document_webhook
from happ_ingress.replies import ReplyStore, ReplyWaiters
from happ_ingress.repository import AcceptedRecords
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
        publisher = DirectPublisher(
            infra, client_id="happ-ingress", timeout_s=settings.publish_timeout_s
        )
        # Not waiting for Kafka or MongoDB: the ingress must come up and answer
        # 503 while either is away, and recover by itself.
        async with shared_clients(
            infra,
            happ,
            publisher,
            wait_for_infrastructure=False,
            setup_timeout_s=settings.publish_timeout_s,
        ) as clients:
            store = ReplyStore(clients.db)
            # 0 turns waits off, and with them this replica's read of every reply.
            waiters = (
                ReplyWaiters(infra, store, settings.max_waiting) if settings.max_waiting else None
            )
            if waiters is not None:
                # In the background: the webhook must not wait for the broker to start.
                await waiters.start()
            service = IngressService(
                settings,
                ChannelCache(ChannelRepository(clients.db), happ.channel_cache_ttl_s),
                AcceptedRecords(clients.db),
                publisher,
                clients.request_log,
                waiters=waiters,
                replies=store,
            )
            # An accepted webhook's log entry leaves the user's message with the log.
            retention = KeptLogRetention(
                clients.db,
                MESSAGES,
                ACCEPTED_REQUEST,
                retention_days=happ.request_log_retention_days,
            )
            retention.start()
            app.state.service = service
            try:
                async with serving(app, clients):
                    yield
            finally:
                await retention.stop()
                if waiters is not None:
                    await waiters.stop()
                await service.stop()

    app = service_app(
        "ingress",
        lifespan,
        summary="Incoming webhooks: each user message onto inbound.messages.",
        # The webhook routes answer their two paths before FastAPI's routing
        # runs (endpoints.py); the metrics around them still see every request.
        middleware=[Middleware(WebhookRoutes, max_body_bytes=settings.max_body_bytes)],
    )
    document_webhook(app, max_body_bytes=settings.max_body_bytes)
    return app
