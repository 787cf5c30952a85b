"""The test harness: the real system, started once per session.

An embedded Kafka-protocol broker and MongoDB-protocol database, the four
services as separate processes (exactly as ``make run`` starts them), a fake
OpenAI-compatible LLM server and an HTTPS receiver with its own CA, both in
this process so tests can see what the services sent. Consumer-group joins on
the embedded broker take seconds, so nothing here is started per test.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from aiohttp import web
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from happ_admin.request_log.repository import RequestLogRepository
from happ_common.request_log import LogEntry
from happ_devtools import fake_collector, fake_llm, receiver
from happ_devtools.certs import DevTls, dev_tls
from happ_devtools.fake_collector import FakeCollector
from happ_devtools.fake_llm import FakeLlm
from happ_devtools.local_stack import SERVICES, LocalStack, StackConfig
from happ_devtools.procs import free_port, use_port_range
from happ_devtools.receiver import Receiver

ADMIN_TOKEN = "test-admin-token"

# Every test talks to the embedded broker, which refuses idempotent producers
# (InfraSettings.kafka_enable_idempotence); clients built in this process read it here.
os.environ.setdefault("KAFKA_ENABLE_IDEMPOTENCE", "false")

# `make test` runs the suite in two parallel workers (pytest-xdist: gw0, gw1):
# each has its ports and its services' logs to itself.
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
if WORKER:
    use_port_range(20_000 + 3_000 * int(WORKER.removeprefix("gw")), 3_000)
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / WORKER


@dataclass
class System:
    stack: LocalStack
    tls: DevTls
    llm: FakeLlm
    receiver: Receiver
    receiver_port: int
    admin: httpx.AsyncClient
    http: httpx.AsyncClient
    db: AsyncDatabase[dict[str, Any]]
    # The services' spans, when started with tracing (the session's system is).
    collector: FakeCollector | None = None

    def url(self, service: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.stack.config.ports[service]}{path}"

    def endpoint(self, path: str) -> str:
        return f"https://localhost:{self.receiver_port}{path}"

    async def create_channel(self, path: str, **fields: Any) -> dict[str, Any]:
        resp = await self.admin.post(
            "/api/channels", json={"name": "Test", "outgoing_url": self.endpoint(path), **fields}
        )
        assert resp.status_code == 201, resp.text
        channel: dict[str, Any] = resp.json()
        return channel

    async def send(self, channel_id: str, body: dict[str, Any], **kw: Any) -> httpx.Response:
        return await self.http.post(self.url("ingress", f"/webhook/{channel_id}"), json=body, **kw)

    async def log(self, channel_id: str, **params: Any) -> list[dict[str, Any]]:
        """The channel's request log as the admin API lists it, newest first,
        every page (a first attempt's entry is not in ``request_log``: it is
        kept with the reply's delivery state)."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            resp = await self.admin.get(
                f"/api/channels/{channel_id}/logs",
                params={"limit": 200, **params, **({"cursor": cursor} if cursor else {})},
            )
            assert resp.status_code == 200, resp.text
            page = resp.json()
            items += page["items"]
            if not (cursor := page["next_cursor"]):
                return items

    async def messages(self, channel_id: str, sender_id: str) -> list[dict[str, Any]]:
        """Both sides of a conversation as the admin API lists them (each reply
        with its delivery), newest first, every page."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            resp = await self.admin.get(
                f"/api/channels/{channel_id}/conversations/{sender_id}/messages",
                params={"limit": 200, **({"cursor": cursor} if cursor else {})},
            )
            assert resp.status_code == 200, resp.text
            page = resp.json()
            items += page["items"]
            if not (cursor := page["next_cursor"]):
                return items

    async def log_when(self, channel_id: str, count: int) -> list[dict[str, Any]]:
        """The channel's request log once it lists ``count`` entries."""
        listed: list[dict[str, Any]] = []

        async def logged() -> bool:
            listed[:] = await self.log(channel_id)
            return len(listed) == count

        await eventually(logged)
        return listed


async def first_log_page(admin: RequestLogRepository, channel_id: str) -> list[LogEntry]:
    """A channel's newest request-log entries as ``admin`` (with its retention)
    lists them, unfiltered."""
    return await admin.logs(
        channel_id,
        direction=None,
        status={},
        since=None,
        until=None,
        message_id=None,
        before=None,
        limit=10,
    )


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> DevTls:
    return dev_tls(tmp_path_factory.mktemp("tls"))


@pytest_asyncio.fixture(scope="session")
async def system(tls: DevTls, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[System]:
    async with running_system(
        tls, tmp_path_factory.mktemp("happ"), FakeLlm(), tracing=True
    ) as running:
        yield running


@asynccontextmanager
async def running_system(
    tls: DevTls,
    data_dir: Path,
    llm: FakeLlm,
    logs_to: Path = ARTIFACTS,
    *,
    kafka_tls: bool = False,
    tracing: bool = False,
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[System]:
    """The whole system on a broker and database of its own, with ``llm`` and a
    receiver in this process; ``env`` overrides the services' test settings.
    ``kafka_tls``: the broker is reachable only over TLS (the test CA's certificate).
    ``tracing``: the services export OpenTelemetry spans to a collector in this process.
    The services' logs are copied to ``logs_to`` at the end."""
    llm_port = free_port()
    llm_runner = await fake_llm.start(llm, llm_port)
    rec = Receiver()
    rec_port = free_port()
    rec_runner = await receiver.start(
        rec, rec_port, receiver.server_ssl(tls.cert_file, tls.key_file)
    )
    env = dict(env or {})
    collector: FakeCollector | None = None
    collector_runner = None
    if tracing:
        collector = FakeCollector()
        collector_port = free_port()
        collector_runner = await fake_collector.start(collector, collector_port)
        env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = f"http://127.0.0.1:{collector_port}/v1/traces"
        env["OTEL_BSP_SCHEDULE_DELAY"] = "200"  # ms: spans reach the test quickly
    stack = make_stack(data_dir, tls, llm_port, kafka_tls=kafka_tls, **env)
    config = stack.config
    try:
        await asyncio.to_thread(stack.start_infra)
        await asyncio.to_thread(stack.start_services)
        async with (
            httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{config.ports['admin']}",
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                timeout=15,
            ) as admin,
            httpx.AsyncClient(timeout=15) as http,
        ):
            mongo_client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
                stack.mongodb_uri, tz_aware=True
            )
            try:
                yield System(
                    stack, tls, llm, rec, rec_port, admin, http, mongo_client["happ"], collector
                )
            finally:
                await mongo_client.close()
    finally:
        await asyncio.to_thread(stack.stop)
        _keep_logs(stack, logs_to)
        await rec_runner.cleanup()
        await llm_runner.cleanup()
        if collector_runner is not None:
            await collector_runner.cleanup()


def make_stack(
    data_dir: Path, tls: DevTls, llm_port: int, *, kafka_tls: bool = False, **env: str
) -> LocalStack:
    """A stack (not started) with its own embedded broker and database, configured for
    tests: the fake LLM on ``llm_port``, the test CA, short retries; ``env`` overrides."""
    service_env = {
        "HAPP_ADMIN_TOKEN": ADMIN_TOKEN,
        "HAPP_DELIVERY_CA_FILE": str(tls.ca_file),
        "HAPP_ALLOW_PRIVATE_ENDPOINTS": "true",
        "HAPP_DELIVERY_RETRY_DELAYS": "1,2,3",
        "HAPP_DELIVERY_TIMEOUT_S": "2",
        "OPENAI_API_KEY": "test-key",
        "OPENAI_BASE_URL": f"http://127.0.0.1:{llm_port}/v1",
        "HAPP_ASSISTANT_LLM_BACKOFF_S": "0.05",
        "HAPP_ASSISTANT_LLM_TIMEOUT_S": "5",
        # A killed member's partitions move on after 6 s rather than 10.
        "KAFKA_SESSION_TIMEOUT_MS": "6000",
        # The embedded broker holds each fetch this long whatever arrives: at the
        # local stack's 20 ms an idle system keeps a good part of a core busy
        # (the broker answering polls; `make bench-idle`), for some tens of ms
        # more per hop at 100; the suite runs several systems at once on two cores.
        "KAFKA_FETCH_MAX_WAIT_MS": "100",
        # Every line a JSON object: tests/test_json_logs.py follows messages through them.
        "HAPP_LOG_FORMAT": "json",
        **env,
    }
    base_env = {
        k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "MONGODB_URI")
    }
    config = StackConfig(
        data_dir=data_dir,
        env=service_env,
        ports={name: free_port() for name in SERVICES},
        partitions=6,
        kafka_tls=tls if kafka_tls else None,
    )
    return LocalStack(config, base_env=base_env)


def _keep_logs(stack: LocalStack, folder: Path = ARTIFACTS) -> None:
    """Copy the services' logs where CI keeps them, for a failed run's post-mortem."""
    folder.mkdir(parents=True, exist_ok=True)
    for log in stack.logs.glob("*.log"):
        (folder / log.name).write_bytes(log.read_bytes()[-2_000_000:])


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout_s: float = 20.0, interval_s: float = 0.1
) -> None:
    """Wait for ``check`` to hold; fail with the timeout otherwise."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        if await check():
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(interval_s)


__all__ = ["System", "eventually", "web"]


@pytest_asyncio.fixture(scope="session")
async def tls_other_ca(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """An HTTPS endpoint whose certificate no configured CA trusts."""
    other = dev_tls(tmp_path_factory.mktemp("other-ca"))
    port = free_port()
    runner = await receiver.start(
        Receiver(), port, receiver.server_ssl(other.cert_file, other.key_file)
    )
    try:
        yield f"https://localhost:{port}/untrusted"
    finally:
        await runner.cleanup()
