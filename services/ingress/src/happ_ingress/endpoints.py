"""The webhook routes: read the body within its limit, hand it to the service."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request

from happ_common.errors import ErrorBody, HappError
from happ_ingress.schemas import Accepted, Duplicate, WebhookPayload
from happ_ingress.service import IncomingRequest, IngressService

router = APIRouter()

_ERRORS: dict[int | str, dict[str, object]] = {
    s: {"model": ErrorBody} for s in (401, 403, 404, 413, 422, 429, 503)
}


def _too_large(limit: int) -> HappError:
    return HappError(
        413,
        "PAYLOAD_TOO_LARGE",
        f"The body is larger than {limit // 1024} KiB; send large files as attachment URLs.",
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def _webhook(
    request: Request,
    channel_id: str,
    signature: str | None,
    idempotency_key: str | None,
) -> Accepted | Duplicate:
    service: IngressService = request.app.state.service
    try:
        body = await read_body(request, request.app.state.settings.max_body_bytes)
    except HappError as exc:
        await service.record_rejection(channel_id, request.url.path, exc)
        raise
    return await service.receive(
        IncomingRequest(
            channel_id=channel_id,
            path=request.url.path,
            body=body,
            content_type=request.headers.get("content-type"),
            signature=signature,
            idempotency_key=idempotency_key[:128] if idempotency_key else None,
        )
    )


@router.post(
    "/webhook/{channel_id}",
    responses=_ERRORS,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": WebhookPayload.model_json_schema()}},
        }
    },
)
async def webhook(
    request: Request,
    channel_id: str,
    x_happ_signature: Annotated[str | None, Header()] = None,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> Accepted | Duplicate:
    """Accept one user message. A 200 means the broker stored it (acks=all)."""
    return await _webhook(request, channel_id, x_happ_signature, idempotency_key)


@router.post("/cm/{channel_id}", responses=_ERRORS, include_in_schema=False)
async def webhook_alias(
    request: Request,
    channel_id: str,
    x_happ_signature: Annotated[str | None, Header()] = None,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> Accepted | Duplicate:
    return await _webhook(request, channel_id, x_happ_signature, idempotency_key)
