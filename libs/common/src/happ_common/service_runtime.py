"""How a service process starts and what every service's app has.

``run_service``: logging, tracing, then uvicorn on the service's port. uvicorn
picks uvloop and httptools when installed (``uvicorn[standard]``); each service
runs one worker process and scales by replicas, not by forking.

``service_app``: the FastAPI app around a service's lifespan, with what the
four have in common (error handlers, ``/healthz`` and ``/readyz``, HTTP
metrics); ``serving`` ends each lifespan's startup.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Literal, Protocol, TypeVar

import uvicorn
from fastapi import FastAPI
from starlette.middleware import Middleware

from happ_common.clients import Clients
from happ_common.errors import install_error_handlers
from happ_common.http_metrics import HttpMetrics, service_version
from happ_common.log_context import log_handler
from happ_common.ops import ops_router
from happ_common.settings import HappSettings
from happ_common.tracing import setup_tracing


def configure_logging(
    service: str, level: str = "INFO", fmt: Literal["text", "json"] = "text"
) -> None:
    logging.basicConfig(level=level.upper(), handlers=[log_handler(service, fmt)], force=True)
    debug = level.upper() == "DEBUG"
    # aiokafka logs every transient connection error at ERROR; the services
    # report those through /readyz and metrics instead.
    logging.getLogger("aiokafka").setLevel(logging.DEBUG if debug else logging.CRITICAL)
    # The HTTP clients log every request at INFO: one line per LLM call or POST,
    # which the services' own lines about each message already say.
    for name in ("httpx", "httpx2", "httpcore"):
        logging.getLogger(name).setLevel(logging.DEBUG if debug else logging.WARNING)


def freeze_startup_heap() -> None:
    """Move everything allocated at startup out of the collector's sight.

    Called at the end of each lifespan's startup. Without it, full collections
    walk every module, model and client object on each pass: under a steady load
    they were the ingress's p99 (README, "Each service freezes its startup heap").
    """
    gc.collect()
    gc.freeze()


Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def service_app(
    service: str,
    lifespan: Lifespan,
    *,
    middleware: Sequence[Middleware] = (),
    summary: str | None = None,
    description: str = "",
) -> FastAPI:
    """A service's app: its version, the typed errors' responses, ``/healthz``
    and ``/readyz`` answered from what ``serving`` leaves in ``app.state``, and
    ``middleware`` (innermost first) inside the HTTP metrics, which see every
    request, including those a middleware answers itself (the ingress's webhook)."""
    app = FastAPI(
        title=f"HAPP {service}",
        summary=summary,
        description=description,
        version=service_version(service),
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.state.alive = _always
    # Late-bound: the lifespan sets both (``serving``).
    app.include_router(ops_router(lambda: app.state.checks, alive=lambda: app.state.alive()))  # noqa: PLW0108
    for m in middleware:
        app.add_middleware(m.cls, *m.args, **m.kwargs)
    app.add_middleware(HttpMetrics, service=service)
    return app


@asynccontextmanager
async def serving(
    app: FastAPI, clients: Clients, alive: Callable[[], bool] | None = None
) -> AsyncIterator[None]:
    """The end of a lifespan's startup: ``/readyz`` checks ``clients``,
    ``/healthz`` asks ``alive`` (a consumer: its pipeline and publisher), and
    the startup heap is frozen; the lifespan's shutdown follows the block."""
    app.state.checks = clients.readiness_checks()
    if alive is not None:
        app.state.alive = alive
    freeze_startup_heap()
    yield


def _always() -> bool:
    return True


class ServiceSettings(Protocol):
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...


S = TypeVar("S", bound=ServiceSettings)


def run_service(
    service: str, settings: Callable[[], S], create_app: Callable[[S], FastAPI]
) -> None:
    """A service's ``python -m`` entry point: its settings from the environment,
    its app, served on its port."""
    loaded = settings()
    serve(create_app(loaded), host=loaded.host, port=loaded.port, service=service)


def serve(app: FastAPI, *, host: str, port: int, service: str) -> None:
    happ = HappSettings()
    configure_logging(service, happ.log_level, happ.log_format)
    setup_tracing(service)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=15,
        # Nothing reads the client address, so no X-Forwarded-* rewriting per request.
        proxy_headers=False,
        server_header=False,
    )
