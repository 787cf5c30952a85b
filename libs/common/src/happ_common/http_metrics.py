"""Request metrics for every HTTP service, as a plain ASGI middleware.

Plain ASGI rather than ``BaseHTTPMiddleware``: it adds no task or stream
wrapping to the ingress hot path. Routes are labelled by their template
(``/webhook/{channel_id}``), never by the raw path, so label cardinality stays
bounded whatever callers send.
"""

from __future__ import annotations

import time
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SERVICE_INFO = Gauge(
    "happ_service_info", "Always 1; labels name the service", ["service", "version"]
)
HTTP_REQUESTS = Counter(
    "happ_http_requests_total", "HTTP requests served", ["service", "method", "route", "status"]
)
HTTP_DURATION = Histogram(
    "happ_http_request_duration_seconds",
    "HTTP request duration",
    ["service", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def service_version(service: str) -> str:
    """The installed ``happ-<service>`` package's version: what a dashboard shows
    during a rolling deploy is what is really running."""
    try:
        return version(f"happ-{service}")
    except PackageNotFoundError:  # run from a source tree without installing
        return "unknown"


class ResponseStatus:
    """An ASGI ``send`` that remembers the status it sent (500 until it sends one)."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.status = 500

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        await self._send(message)


class HttpMetrics:
    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service
        SERVICE_INFO.labels(service=service, version=service_version(service)).set(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        response = ResponseStatus(send)
        try:
            await self.app(scope, receive, response)
        except Exception:
            # The error handlers outside turn any escaped exception into a 503.
            response.status = 503
            raise
        finally:
            route: Any = scope.get("route")
            template = getattr(route, "path", None) or "(unmatched)"
            HTTP_REQUESTS.labels(
                self.service, scope["method"], template, str(response.status)
            ).inc()
            HTTP_DURATION.labels(self.service, template).observe(time.perf_counter() - started)
