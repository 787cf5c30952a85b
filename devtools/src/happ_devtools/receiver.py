"""An HTTPS endpoint that receives replies and checks their signatures.

``make demo`` runs it on https://localhost:8443 with the development CA; the
tests run it in-process to see exactly what HAPP sent.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from aiohttp import web
from fastapi import FastAPI, Request
from fastapi.responses import Response

from happ_common.signing import verify_happ_signature


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    status: int | None = None  # what the receiver answered (None while it decides)

    def json(self) -> dict[str, Any]:
        data = json.loads(self.body)
        assert isinstance(data, dict)
        return data


# The status to answer, the delay before it, and optionally headers to add.
Answer = tuple[int, float] | tuple[int, float, dict[str, str]]


@dataclass
class Receiver:
    """Records every request. ``decide`` (per request) or ``behaviour`` (per path)
    pick the status to answer and a delay before answering, and may add response
    headers (``Retry-After``); 200 at once otherwise."""

    received: list[Received] = field(default_factory=list)
    behaviour: dict[str, Answer] = field(default_factory=dict)
    decide: dict[str, Callable[[Received], Answer]] = field(default_factory=dict)
    on_receive: Callable[[Received], None] | None = None
    _arrived: asyncio.Condition | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_post("/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.Response:
        got = Received(request.path, dict(request.headers), await request.read(), time.time())
        self.received.append(got)
        if self.on_receive:
            self.on_receive(got)
        if self._arrived is None:
            self._arrived = asyncio.Condition()
        async with self._arrived:
            self._arrived.notify_all()
        decider = self.decide.get(request.path)
        status, delay, *extra = (
            decider(got) if decider else self.behaviour.get(request.path, (200, 0.0))
        )
        if delay:
            await asyncio.sleep(delay)
        got.status = status
        headers = extra[0] if extra else None
        return web.json_response({"ok": status < 300}, status=status, headers=headers)

    def on_path(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    async def wait_for(self, path: str, count: int = 1, timeout_s: float = 30.0) -> list[Received]:
        if self._arrived is None:
            self._arrived = asyncio.Condition()
        async with asyncio.timeout(timeout_s), self._arrived:
            await self._arrived.wait_for(lambda: len(self.on_path(path)) >= count)
        return self.on_path(path)


def server_ssl(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert_file), str(key_file))
    return ctx


async def start(
    receiver: Receiver, port: int, ssl_context: ssl.SSLContext, host: str = "127.0.0.1"
) -> web.AppRunner:
    runner = web.AppRunner(receiver.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, ssl_context=ssl_context).start()
    return runner


def signature_ok(got: Received, secret: str) -> bool:
    return verify_happ_signature([secret], got.body, got.headers.get("X-HAPP-Signature", ""))


def _counting_app() -> web.Application:
    """A receiver for benchmarks: answers 200 at once and counts, nothing else."""
    stats = {"count": 0, "first": 0.0, "last": 0.0}

    async def receive(request: web.Request) -> web.Response:
        await request.read()
        now = time.time()
        stats["count"] += 1
        stats["first"] = stats["first"] or now
        stats["last"] = now
        return web.Response(body=b'{"ok":true}', content_type="application/json")

    async def report(_: web.Request) -> web.Response:
        return web.json_response(stats)

    async def reset(_: web.Request) -> web.Response:
        stats.update(count=0, first=0.0, last=0.0)
        return web.json_response(stats)

    app = web.Application()
    app.router.add_get("/stats", report)
    app.router.add_delete("/stats", reset)
    app.router.add_post("/{tail:.*}", receive)
    return app


def _recording_app() -> web.Application:
    """A receiver for the end-to-end benchmark: answers 200 at once and notes
    when each reply arrived, by the message it answers (``GET /arrivals?from=N``
    returns ``[[in_reply_to, unix time], ...]`` from the N-th on)."""
    arrivals: list[tuple[str, float]] = []

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        now = time.time()
        arrivals.append((str(json.loads(body).get("in_reply_to")), now))
        return web.Response(body=b'{"ok":true}', content_type="application/json")

    async def report(request: web.Request) -> web.Response:
        start = int(request.query.get("from", "0"))
        return web.json_response(arrivals[start:])

    app = web.Application()
    app.router.add_get("/arrivals", report)
    app.router.add_post("/{tail:.*}", receive)
    return app


def _counting_asgi() -> Any:
    """The same counting receiver as a FastAPI app, for uvicorn: the endpoint a
    FastAPI integrator runs, and the receiver GUIDE.md's client numbers used."""
    stats = {"count": 0, "first": 0.0, "last": 0.0}
    app = FastAPI()

    @app.get("/stats")
    async def report() -> dict[str, float]:
        return stats

    @app.delete("/stats")
    async def reset() -> dict[str, float]:
        stats.update(count=0, first=0.0, last=0.0)
        return stats

    @app.post("/{tail:path}")
    async def receive(request: Request) -> Response:
        await request.body()
        now = time.time()
        stats["count"] += 1
        stats["first"] = stats["first"] or now
        stats["last"] = now
        return Response(b'{"ok":true}', media_type="application/json")

    return app


def main() -> None:
    import argparse  # noqa: PLC0415

    parser = argparse.ArgumentParser(description="HTTPS receiver that counts requests")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", type=Path, required=True)
    parser.add_argument("--key", type=Path, required=True)
    parser.add_argument("--server", choices=("aiohttp", "uvicorn"), default="aiohttp")
    parser.add_argument(
        "--record", action="store_true", help="note each reply's arrival (GET /arrivals)"
    )
    args = parser.parse_args()
    if args.server == "uvicorn":
        uvicorn.run(
            _counting_asgi(),
            host="127.0.0.1",
            port=args.port,
            ssl_certfile=str(args.cert),
            ssl_keyfile=str(args.key),
            access_log=False,
            log_level="warning",
        )
        return
    web.run_app(
        _recording_app() if args.record else _counting_app(),
        host="127.0.0.1",
        port=args.port,
        ssl_context=server_ssl(args.cert, args.key),
        access_log=None,
        print=None,
    )


if __name__ == "__main__":
    main()
