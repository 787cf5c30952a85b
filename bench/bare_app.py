"""The baseline for ``make bench-ingress``: a bare FastAPI endpoint that only
parses the same body with the same model, served the same way (one uvicorn
worker, uvloop, httptools). What the real ingress adds on top of this is the
product: channel lookup, signature, rate limit, request log, broker ack."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI, Request

from happ_common.service_runtime import freeze_startup_heap
from happ_ingress.schemas import Accepted, WebhookPayload


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    freeze_startup_heap()  # the same GC treatment as the real services, for fairness
    yield


app = FastAPI(lifespan=lifespan)


@app.post("/webhook/{channel_id}")
async def webhook(channel_id: str, request: Request) -> Accepted:
    payload = WebhookPayload.model_validate_json(await request.body())
    return Accepted(message_id=payload.message_id or "m", channel_id=channel_id)


if __name__ == "__main__":
    # Served exactly as the services are (happ_common.service_runtime.serve).
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_level="warning",
        access_log=False,
        proxy_headers=False,
        server_header=False,
    )
