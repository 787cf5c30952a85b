"""The delivery application: a keyed consumer of outbound.replies and
delivery.retry behind /healthz, /readyz and /metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from happ_common.asyncapi import asyncapi_router
from happ_common.channels import ChannelCache, ChannelRepository
from happ_common.clients import shared_clients
from happ_common.consumer import consumer_pipeline
from happ_common.deliveries import FIRST_ATTEMPT
from happ_common.endpoint_health import EndpointHealthRepository
from happ_common.ids import channel_of_key
from happ_common.kafka import EventPublisher
from happ_common.kept_log_retention import KeptLogRetention
from happ_common.mongo import DELIVERIES
from happ_common.service_runtime import service_app, serving
from happ_common.settings import HappSettings, InfraSettings
from happ_common.topics import DELIVERY_RETRY
from happ_common.webhook_client import new_session
from happ_delivery.backlog import BacklogGuard
from happ_delivery.handlers import on_assigned, on_revoked, subscriptions
from happ_delivery.health import EndpointHealth
from happ_delivery.repository import DeliveryRepository
from happ_delivery.service import DeliveryService
from happ_delivery.settings import DeliverySettings


def create_app(
    settings: DeliverySettings | None = None,
    infra: InfraSettings | None = None,
    happ: HappSettings | None = None,
) -> FastAPI:
    settings = settings or DeliverySettings()
    infra = infra or InfraSettings()
    happ = happ or HappSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        publisher = EventPublisher(infra, client_id="happ-delivery")
        async with shared_clients(infra, happ, publisher) as clients:
            session = new_session(
                ca_file=settings.ca_file,
                allow_private=happ.allow_private_endpoints,
                max_connections=settings.max_connections,
                max_connections_per_host=settings.max_connections_per_host,
            )
            repository = DeliveryRepository(clients.db)
            service = DeliveryService(
                settings=settings,
                allow_private=happ.allow_private_endpoints,
                channels=ChannelCache(ChannelRepository(clients.db), happ.channel_cache_ttl_s),
                repository=repository,
                session=session,
                publisher=publisher,
                request_log=clients.request_log,
                health=EndpointHealth(
                    EndpointHealthRepository(clients.db),
                    disable_after_hours=settings.auto_disable_after_hours,
                    cache_ttl_s=happ.channel_cache_ttl_s,
                ),
                partitions=infra.kafka_partitions,
            )
            pipeline = consumer_pipeline(
                "delivery",
                subscriptions(service),
                settings,
                infra,
                publisher,
                max_parked_bytes=settings.max_parked_bytes,
                # A POST in flight at a rebalance or shutdown may finish:
                # cut off, the next owner would send it again.
                revoke_grace_s=settings.timeout_s + 5,
                always_fetch=(DELIVERY_RETRY,),
                group_of=lambda record: channel_of_key(record.key),
                on_assigned=on_assigned(service),
                on_revoked=on_revoked(service),
            )
            backlog = BacklogGuard(
                EndpointHealthRepository(clients.db),
                pipeline.parked_bytes_by_group,
                max_bytes_per_channel=settings.max_parked_bytes_per_channel,
                # The ingress sees a lease through its channel cache: one
                # shorter than twice the cache's lifetime could come and go unseen.
                lease_s=max(settings.backlog_lease_s, 2 * happ.channel_cache_ttl_s + 2),
            )
            # A first attempt's log entry leaves its delivery state with the log.
            retention = KeptLogRetention(
                clients.db,
                DELIVERIES,
                FIRST_ATTEMPT,
                retention_days=happ.request_log_retention_days,
            )
            await pipeline.start()
            backlog.start()
            retention.start()
            try:
                async with serving(
                    app, clients, alive=lambda: pipeline.healthy() and publisher.healthy()
                ):
                    yield
            finally:
                await retention.stop()
                await backlog.stop()
                await pipeline.stop()
                await repository.drain()
                await session.close()

    app = service_app("delivery", lifespan)
    app.include_router(asyncapi_router())
    return app
