"""The assistant application: a keyed consumer of inbound.messages behind /healthz,
/readyz and /metrics. The lifespan owns every client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from happ_assistant.handlers import subscriptions
from happ_assistant.history import HistoryCache
from happ_assistant.llm import ChatModel, OfflineResponder, OpenAIChat
from happ_assistant.repository import ConversationRepository
from happ_assistant.service import AssistantService
from happ_assistant.settings import AssistantServiceSettings
from happ_common.asyncapi import asyncapi_router
from happ_common.channels import ChannelCache, ChannelRepository
from happ_common.clients import shared_clients
from happ_common.consumer import consumer_pipeline
from happ_common.db_latency import DB_LATENCY
from happ_common.kafka import EventPublisher
from happ_common.service_runtime import service_app, serving
from happ_common.settings import HappSettings, InfraSettings


def chat_model(settings: AssistantServiceSettings) -> ChatModel:
    if settings.openai_api_key:
        return OpenAIChat(
            settings.openai_api_key,
            settings.openai_base_url,
            http_client=settings.llm_http_client,
            max_connections=settings.llm_max_connections,
        )
    return OfflineResponder()


def create_app(
    settings: AssistantServiceSettings | None = None,
    infra: InfraSettings | None = None,
    happ: HappSettings | None = None,
) -> FastAPI:
    settings = settings or AssistantServiceSettings()
    infra = infra or InfraSettings()
    happ = happ or HappSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        publisher = EventPublisher(infra, client_id="happ-assistant")
        async with shared_clients(infra, happ, publisher) as clients:
            model = chat_model(settings)
            repository = ConversationRepository(
                clients.db, batch_wait_s=settings.db_batch_wait_s, batch_max=settings.db_batch_max
            )
            history = HistoryCache(
                settings.history_cache_conversations,
                max_chars=settings.context_chars,
                max_bytes=settings.history_cache_bytes,
            )
            service = AssistantService(
                settings=settings,
                channels=ChannelCache(ChannelRepository(clients.db), happ.channel_cache_ttl_s),
                conversations=repository,
                history=history,
                model=model,
                publisher=publisher,
            )
            pipeline = consumer_pipeline(
                "assistant",
                subscriptions(service),
                settings,
                infra,
                publisher,
                db_latency_ms=DB_LATENCY.recent_ms,
                db_latency_target_ms=settings.db_latency_target_ms,
                # The next owner of a revoked partition writes to its conversations.
                on_revoked=history.revoke,
            )
            await pipeline.start()
            try:
                async with serving(
                    app, clients, alive=lambda: pipeline.healthy() and publisher.healthy()
                ):
                    yield
            finally:
                # An answer in flight at shutdown may finish (its LLM call is
                # not paid twice); the deployments' termination grace covers it.
                await pipeline.stop(grace_s=settings.llm_timeout_s + 5)
                await repository.drain()
                await model.close()

    app = service_app("assistant", lifespan)
    app.include_router(asyncapi_router())
    return app
