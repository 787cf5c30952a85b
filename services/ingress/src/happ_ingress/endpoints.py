"""The webhook routes, served as a plain ASGI layer in front of FastAPI.

The webhook is the hot path. Profiling the ingress under wrk showed about 40 %
of its CPU in FastAPI's routing and dependency machinery (request parsing into
parameters, exception middleware), more than the broker publish itself. So
``POST /webhook/{channel_id}`` and ``POST /cm/{channel_id}`` are matched here and
answered directly; every other path (``/healthz``, ``/metrics``, ``/docs``) goes
on to FastAPI. The OpenAPI document still describes the webhook (see
``openapi.py``). Numbers: ``docs/benchmarks.md``.

``Prefer: wait=<seconds>`` (RFC 7240) asks to hold the request until the
message's reply exists (SPEC §3a, ``replies.py``); a request without it takes
exactly the path it took before. ``GET /webhook/{channel_id}/replies`` is
served here too, for the same reason of one place for the channel's routes.
"""

from __future__ import annotations

import logging
import re

from opentelemetry.trace import SpanKind
from starlette.types import ASGIApp, Receive, Scope, Send

from happ_common import tracing
from happ_common.errors import METHOD_NOT_ALLOWED, HappError, service_unavailable
from happ_ingress.errors import CLIENT_DISCONNECTED, PAYLOAD_TOO_LARGE
from happ_ingress.schemas import Waited
from happ_ingress.service import (
    IncomingRequest,
    IngressService,
    RepliesRequest,
    ReplyInResponse,
    Result,
    Wait,
)

log = logging.getLogger(__name__)

_PATH = re.compile(r"^/(webhook|cm)/([^/]+)/?$")
_REPLIES_PATH = re.compile(r"^/(webhook|cm)/([^/]+)/replies/?$")
# RFC 7240: a preference the server does not support is ignored, so a wait
# outside 1-30 s, or not a whole number, is treated as no wait at all.
_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*\"?([0-9]{1,3})\"?\s*(?:$|[,;])", re.IGNORECASE)
MAX_WAIT_S = 30


class _Route:
    """What ``HttpMetrics`` reads to label the request by its route template."""

    def __init__(self, path: str) -> None:
        self.path = path


_ROUTES = {"webhook": _Route("/webhook/{channel_id}"), "cm": _Route("/cm/{channel_id}")}
_REPLIES_ROUTES = {
    "webhook": _Route("/webhook/{channel_id}/replies"),
    "cm": _Route("/cm/{channel_id}/replies"),
}


def preferred_wait(prefer: bytes | None) -> int | None:
    """The seconds of a ``Prefer: wait=N`` header, if N is within 1-30."""
    if prefer is None:
        return None
    match = _WAIT.search(prefer.decode("latin-1"))
    if match is None:
        return None
    seconds = int(match.group(1))
    return seconds if 1 <= seconds <= MAX_WAIT_S else None


def _too_large(limit: int) -> HappError:
    return PAYLOAD_TOO_LARGE(
        f"The body is larger than {limit // 1024} KiB; send large files as attachment URLs.",
    )


async def read_body(receive: Receive, declared: bytes | None, limit: int) -> bytes:
    """The body, refused as soon as it is known to exceed ``limit`` bytes."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise CLIENT_DISCONNECTED("The client went away mid-request.")
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class WebhookRoutes:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            match = _PATH.match(scope["path"])
            if match is not None:
                if scope["method"] != "POST":
                    refusal = METHOD_NOT_ALLOWED(
                        "Send the message with POST.", headers={"Allow": "POST"}
                    )
                    await refusal.response()(scope, receive, send)
                    return
                scope["route"] = _ROUTES[match.group(1)]
                await self._webhook(scope, receive, send, match.group(2))
                return
            match = _REPLIES_PATH.match(scope["path"])
            if match is not None:
                if scope["method"] != "GET":
                    refusal = METHOD_NOT_ALLOWED(
                        "Fetch replies with GET.", headers={"Allow": "GET"}
                    )
                    await refusal.response()(scope, receive, send)
                    return
                scope["route"] = _REPLIES_ROUTES[match.group(1)]
                await self._replies(scope, receive, send, match.group(2))
                return
        await self.app(scope, receive, send)

    async def _replies(self, scope: Scope, receive: Receive, send: Send, channel_id: str) -> None:
        # The lifespan puts it in the app's state once the clients exist.
        service: IngressService = scope["app"].state.service
        headers = dict(scope["headers"])
        try:
            body = await service.replies(
                RepliesRequest(
                    channel_id=channel_id,
                    path=scope["path"],
                    query=scope["query_string"].decode("latin-1"),
                    timestamp=_text(headers.get(b"x-happ-timestamp")),
                    signature=_text(headers.get(b"x-happ-signature")),
                )
            )
        except HappError as exc:
            await exc.response()(scope, receive, send)
            return
        except Exception:
            log.exception("replies of %s failed unexpectedly", channel_id)
            unavailable = service_unavailable("Replies cannot be read right now; retry shortly.")
            await unavailable.response()(scope, receive, send)
            return
        await _send_json(send, 200, body)

    async def _webhook(self, scope: Scope, receive: Receive, send: Send, channel_id: str) -> None:
        service: IngressService = scope["app"].state.service
        headers = dict(scope["headers"])
        path: str = scope["path"]
        try:
            try:
                body = await read_body(receive, headers.get(b"content-length"), self.max_body_bytes)
            except HappError as exc:
                await service.record_rejection(channel_id, path, exc)
                raise
            with tracing.span(
                "POST /webhook/{channel_id}",
                SpanKind.SERVER,
                parent=_trace_parent(headers) if tracing.enabled() else None,
                attributes={"http.request.method": "POST", "happ.channel_id": channel_id},
            ):
                seconds = preferred_wait(headers.get(b"prefer"))
                result = await service.receive(
                    IncomingRequest(
                        channel_id=channel_id,
                        path=path,
                        body=body,
                        content_type=_text(headers.get(b"content-type")),
                        signature=_text(headers.get(b"x-happ-signature")),
                        idempotency_key=_text(headers.get(b"idempotency-key")),
                    ),
                    # After the body, receive() returns only when the client leaves.
                    None if seconds is None else Wait(seconds, receive),
                )
        except HappError as exc:
            response = exc.response()
        except Exception:
            log.exception("webhook %s failed unexpectedly", channel_id)
            response = service_unavailable(
                "The service hit an internal problem; retry shortly."
            ).response()
        else:
            await _send_result(result, send, seconds)
            return
        await response(scope, receive, send)


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


_JSON = [(b"content-type", b"application/json")]


async def _send_result(result: Result, send: Send, waited: int | None) -> None:
    if isinstance(result, ReplyInResponse):
        await _send_json(send, 200, result.json(), waited)
    elif isinstance(result, Waited):
        await _send_json(send, 202, result.model_dump_json().encode(), waited)
    else:  # no wait asked for, or the channel's replies do not leave in responses
        await _send_json(send, 200, result.model_dump_json().encode())


async def _send_json(send: Send, status: int, body: bytes, waited: int | None = None) -> None:
    headers = [*_JSON, (b"content-length", str(len(body)).encode())]
    if waited is not None:
        headers.append((b"preference-applied", f"wait={waited}".encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _trace_parent(headers: dict[bytes, bytes]) -> dict[str, str]:
    """The integrator's own trace context, if its request carried one."""
    return {
        name: value.decode("latin-1")
        for name in tracing.TRACE_HEADERS
        if (value := headers.get(name.encode())) is not None
    }
