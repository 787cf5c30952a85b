"""The operational endpoints every service exposes on its port.

``/healthz`` says the process is alive (503 once a part it cannot work without,
such as a consumer's fetch or commit loop, has died, so Kubernetes restarts it);
``/readyz`` runs the service's readiness checks (Kafka and MongoDB reachable)
and answers 503 naming the failed ones;
``/metrics`` is the Prometheus text format, every metric prefixed ``happ_``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

ReadinessCheck = Callable[[], Awaitable[None]]


def _always() -> bool:
    return True


def ops_router(
    checks: Callable[[], Mapping[str, ReadinessCheck]],
    timeout_s: float = 2.0,
    alive: Callable[[], bool] = _always,
) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/healthz")
    async def healthz(response: Response) -> dict[str, str]:
        if not alive():
            response.status_code = 503
            return {"status": "dead"}
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz(response: Response) -> dict[str, object]:
        named = dict(checks())

        async def run(check: ReadinessCheck) -> str:
            try:
                await asyncio.wait_for(check(), timeout_s)
            except Exception as exc:
                return f"failed: {type(exc).__name__}: {exc}"[:300]
            return "ok"

        results = dict(
            zip(named, await asyncio.gather(*(run(c) for c in named.values())), strict=True)
        )
        ready = all(r == "ok" for r in results.values())
        if not ready:
            response.status_code = 503
        return {"status": "ready" if ready else "not ready", "checks": results}

    @router.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return router
