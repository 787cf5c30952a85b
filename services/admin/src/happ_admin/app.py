"""The admin application: the lifespan owns every client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware import Middleware

from happ_admin.action_log import ActionLog
from happ_admin.auth import Authenticator
from happ_admin.channels.endpoints import router as channels_router
from happ_admin.channels.health import DisabledChannelsGauge
from happ_admin.channels.send_test import SendTest
from happ_admin.channels.service import ChannelService
from happ_admin.conversations.endpoints import router as conversations_router
from happ_admin.conversations.repository import ConversationRepository
from happ_admin.conversations.resend import ReplyResender
from happ_admin.conversations.service import ConversationService
from happ_admin.dead_letters.endpoints import router as dead_letters_router
from happ_admin.dead_letters.service import DeadLetterService
from happ_admin.inbox.endpoints import router as inbox_router
from happ_admin.inbox.repository import InboxRepository
from happ_admin.inbox.service import InboxService
from happ_admin.live import LiveUpdates
from happ_admin.recovery.endpoints import router as recovery_router
from happ_admin.recovery.repository import RecoveryRepository
from happ_admin.recovery.service import RecoveryService
from happ_admin.request_log.endpoints import router as request_log_router
from happ_admin.request_log.repository import RequestLogRepository
from happ_admin.request_log.service import RequestLogService
from happ_admin.session.endpoints import router as session_router
from happ_admin.session.repository import SessionRepository
from happ_admin.session.service import SessionService
from happ_admin.settings import AdminSettings
from happ_admin.ui import SecurityHeaders, mount_ui
from happ_admin.users.endpoints import router as users_router
from happ_admin.users.repository import UserRepository
from happ_admin.users.service import UserService
from happ_common.channels import ChannelRepository
from happ_common.clients import Clients, shared_clients
from happ_common.endpoint_health import EndpointHealthRepository
from happ_common.kafka import EventPublisher
from happ_common.service_runtime import service_app, serving
from happ_common.settings import HappSettings, InfraSettings
from happ_common.webhook_client import new_session


def _inbox(
    clients: Clients,
    conversations: ConversationRepository,
    channels: ChannelService,
    publisher: EventPublisher,
    settings: AdminSettings,
) -> tuple[InboxService, LiveUpdates]:
    inbox_repo = InboxRepository(clients.db)
    inbox = InboxService(
        repo=inbox_repo, conversations=conversations, channels=channels, publisher=publisher
    )
    live = LiveUpdates(
        inbox_repo, inbox, poll_s=settings.live_poll_s, keepalive_s=settings.live_keepalive_s
    )
    return inbox, live


async def _recovery(
    clients: Clients, channels: ChannelService, resender: ReplyResender, poll_s: float
) -> tuple[RecoveryService, DisabledChannelsGauge]:
    repo = RecoveryRepository(clients.db)
    await repo.ensure_indexes()
    gauge = DisabledChannelsGauge(EndpointHealthRepository(clients.db), poll_s)
    gauge.start()
    return RecoveryService(repo, channels, resender), gauge


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
        publisher = EventPublisher(infra, client_id="happ-admin")
        async with shared_clients(infra, happ, publisher) as clients:
            log_repo = RequestLogRepository(
                clients.db, retention_days=happ.request_log_retention_days
            )
            session_repo = SessionRepository(clients.db)
            await log_repo.ensure_indexes()
            await session_repo.ensure_indexes()
            users = UserRepository(clients.db)
            # Few requests (one per "Send test"), so a small pool.
            http = new_session(
                ca_file=settings.delivery_ca_file,
                allow_private=happ.allow_private_endpoints,
                max_connections=16,
            )
            channels = ChannelService(ChannelRepository(clients.db), happ)
            conversation_repo = ConversationRepository(clients.db)
            conversations = ConversationService(conversation_repo, log_repo, channels)
            tokens = settings.tokens()
            sessions = SessionService(tokens, session_repo, settings.session_ttl_hours, users)
            app.state.auth = Authenticator(tokens, sessions)
            app.state.users = UserService(users, channels)
            app.state.channels = channels
            app.state.logs = RequestLogService(log_repo, channels)
            app.state.conversations = conversations
            app.state.send_test = SendTest(
                channels=channels,
                session=http,
                request_log=clients.request_log,
                timeout_s=settings.delivery_timeout_s,
                allow_private=happ.allow_private_endpoints,
            )
            app.state.resender = ReplyResender(
                repo=conversation_repo,
                channels=channels,
                conversations=conversations,
                publisher=publisher,
            )
            app.state.recoveries, disabled_gauge = await _recovery(
                clients, channels, app.state.resender, settings.health_poll_s
            )
            app.state.dead_letters = DeadLetterService(infra, publisher)
            app.state.inbox, app.state.live = _inbox(
                clients, conversation_repo, channels, publisher, settings
            )
            app.state.live.start()
            try:
                async with serving(app, clients):
                    yield
            finally:
                await app.state.live.stop()
                await app.state.recoveries.stop()
                await disabled_gauge.stop()
                await http.close()

    app = service_app(
        "admin",
        lifespan,
        summary="Channels, request log, conversations and the web UI.",
        description=(
            "Authenticate with `Authorization: Bearer <token>` (a token from "
            "`HAPP_ADMIN_TOKEN`), or with the web UI's session cookie plus `X-CSRF-Token` "
            "on state-changing requests. Errors: "
            '`{"error": {"code", "message", "details": [{"field", "problem"}]}}`.'
        ),
        middleware=[Middleware(SecurityHeaders), Middleware(ActionLog)],
    )
    app.state.settings = settings
    app.state.happ = happ
    for router in (
        session_router,
        channels_router,
        request_log_router,
        conversations_router,
        recovery_router,
        dead_letters_router,
        inbox_router,
        users_router,
    ):
        app.include_router(router)
    mount_ui(app)
    return app
