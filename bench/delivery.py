"""``make bench-delivery``: signed HTTPS deliveries per second with many in flight
to a local TLS receiver, next to wrk's ceiling against the same receiver, in the
same run. Writes docs/benchmarks.md."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import uvloop
from aiokafka import AIOKafkaProducer
from pymongo import AsyncMongoClient

from happ_common.events import OutboundReply
from happ_common.ids import conversation_key
from happ_devtools.benchkit import add_channel, cpu_seconds, receiver_process, record, wrk
from happ_devtools.certs import DevTls, dev_tls
from happ_devtools.local_stack import LocalStack, StackConfig
from happ_devtools.procs import free_port, port_open, wait_until
from happ_devtools.receiver import main as _receiver_main  # noqa: F401 - the module it runs

REPLIES = int(os.environ.get("BENCH_REPLIES", "10000"))
CONVERSATIONS = int(os.environ.get("BENCH_CONVERSATIONS", "2000"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
RECEIVERS = os.environ.get("BENCH_RECEIVERS", "uvicorn,aiohttp").split(",")
DESCRIBED = {
    "uvicorn": "FastAPI on uvicorn (GUIDE.md's reference)",
    "aiohttp": "aiohttp web server",
}


def _stats(port: int, ctx: ssl.SSLContext, method: str = "GET") -> dict[str, float]:
    req = urllib.request.Request(f"https://localhost:{port}/stats", method=method)
    with urllib.request.urlopen(req, context=ctx, timeout=5) as resp:
        data: dict[str, float] = json.loads(resp.read())
        return data


async def prepare(mongodb_uri: str, url: str, tag: str) -> list[OutboundReply]:
    channel_id = await add_channel(mongodb_uri, url)
    now = datetime.now(UTC)
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongodb_uri)
    replies = [
        OutboundReply(
            channel_id=channel_id,
            reply_id=f"rpl_{tag}{i:08d}",
            in_reply_to=f"m{i}",
            to=f"user{i % CONVERSATIONS}",
            text=f"Reply number {i} to your question.",
            metadata={"source": "bench"},
            created_at=now,
        )
        for i in range(REPLIES)
    ]
    await client.happ.messages.insert_many(
        [
            {
                "channel_id": channel_id,
                "message_id": r.reply_id,
                "sender_id": r.to,
                "role": "assistant",
                "text": r.text,
                "status": "pending",
                "created_at": now,
            }
            for r in replies
        ]
    )
    await client.close()
    return replies


async def produce(bootstrap: str, replies: list[OutboundReply]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(
                "outbound.replies",
                r.model_dump_json().encode(),
                key=conversation_key(r.channel_id, r.to),
            )
            for r in replies
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def assigned_partitions(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    for line in text.splitlines():
        if line.startswith('happ_pipeline_assigned_partitions{consumer="delivery"}'):
            return int(float(line.split()[-1]))
    return 0


async def client_alone(
    url: str, body: bytes, ctx: ssl.SSLContext, requests: int = 20_000
) -> tuple[float, float]:
    """The HTTP client on its own (aiohttp, 32 in flight, same body, same
    receiver): requests/s and its CPU ms per request. What delivering costs
    beyond this is HAPP's own work (consuming, signing, logging, recording)."""
    connector = aiohttp.TCPConnector(ssl=ctx, limit=64)
    async with aiohttp.ClientSession(connector=connector) as session:
        slots = asyncio.Semaphore(32)

        async def post() -> None:
            async with slots, session.post(url, data=body) as resp:
                await resp.read()

        await asyncio.gather(*(post() for _ in range(500)))  # connections, TLS sessions
        cpu_before, started = time.process_time(), time.perf_counter()
        await asyncio.gather(*(post() for _ in range(requests)))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_before
    return requests / elapsed, cpu / requests * 1000


def _per_delivery_ms(r: Round) -> str:
    # CPU seconds spent over the run, per reply that arrived.
    if r.arrived <= 0:
        return "-"
    return " / ".join(
        f"{name.split(' ')[0]} {share * r.total_s / r.arrived * 1000:.2f}"
        for name, share in r.cpu.items()
        if not name.startswith("kafka")
    )


@dataclass(frozen=True)
class Round:
    server: str
    ceiling: float
    client_rate: float  # the aiohttp client alone, 32 in flight
    client_ms: float  # its CPU per request
    rate: float
    arrived: int
    total_s: float
    cpu: dict[str, float]


def run_round(
    server: str, stack: LocalStack, tls: DevTls, ctx: ssl.SSLContext, data: Path
) -> Round:
    rport = free_port()
    receiver = receiver_process(
        f"receiver ({server})",
        rport,
        tls,
        data / "logs" / f"receiver-{server}.log",
        "--server",
        server,
    )
    url = f"https://localhost:{rport}/bench"
    body = (
        OutboundReply(
            channel_id="cm_x",
            reply_id="rpl_x",
            in_reply_to="m",
            to="u",
            text="Reply number 1 to your question.",
            metadata={"source": "bench"},
            created_at=datetime.now(UTC),
        )
        .model_dump_json()
        .encode()
    )
    try:
        receiver.start()
        wait_until(lambda: port_open(rport), 30, "receiver", receiver)
        wrk(url, body, seconds=2, connections=32)
        ceiling = wrk(url, body, seconds=SECONDS, connections=32)
        client_rate, client_ms = uvloop.run(client_alone(url, body, ctx))
        _stats(rport, ctx, "DELETE")
        replies = asyncio.run(prepare(stack.mongodb_uri, url, server))
        processes = [*stack.infra_children, receiver, stack.services["delivery"]]
        cpu_before = {c.name: cpu_seconds(c.pid) for c in processes}
        started = time.time()
        asyncio.run(produce(stack.kafka_bootstrap, replies))
        deadline = time.time() + 600
        while (stats := _stats(rport, ctx))["count"] < REPLIES and time.time() < deadline:
            time.sleep(0.5)
        elapsed = stats["last"] - stats["first"]
        wall = time.time() - started
        cpu = {c.name: (cpu_seconds(c.pid) - cpu_before[c.name]) / wall for c in processes}
    finally:
        receiver.stop()
    return Round(
        server=server,
        ceiling=ceiling.requests_per_s,
        client_rate=client_rate,
        client_ms=client_ms,
        rate=stats["count"] / elapsed if elapsed > 0 else 0.0,
        arrived=int(stats["count"]),
        total_s=wall,
        cpu=cpu,
    )


def main() -> None:
    data = Path(tempfile.mkdtemp(prefix="happ-bench-"))
    tls = dev_tls(data / "tls")
    ctx = ssl.create_default_context(cafile=str(tls.ca_file))
    ports = {
        "ingress": free_port(),
        "admin": free_port(),
        "assistant": free_port(),
        "delivery": free_port(),
    }
    env = {
        "HAPP_ADMIN_TOKEN": "bench",
        "HAPP_ALLOW_PRIVATE_ENDPOINTS": "true",
        "HAPP_DELIVERY_CA_FILE": str(tls.ca_file),
    }
    stack = LocalStack(StackConfig(data_dir=data, ports=ports, env=env))
    try:
        stack.start_infra()
        stack.start_service("delivery")
        stack.wait_ready("delivery")
        # Steady state: the delivery service owns its partitions before the
        # replies are written, as in production where it runs all the time.
        wait_until(lambda: assigned_partitions(ports["delivery"]) > 0, 60, "partition assignment")
        time.sleep(1.0)
        rounds = [run_round(server, stack, tls, ctx, data) for server in RECEIVERS]
    finally:
        stack.stop()
    rows = [
        f"| {DESCRIBED[r.server]} | {r.ceiling:,.0f} | {r.client_rate:,.0f} ({r.client_ms:.2f} ms)"
        f" | {r.rate:,.0f} | **{r.rate / r.ceiling:.2f}**"
        f" | {r.arrived:,}/{REPLIES:,} | "
        + ", ".join(f"{name.split(' ')[0]} {share:.2f}" for name, share in r.cpu.items())
        + f" | {_per_delivery_ms(r)} |"
        for r in rounds
    ]
    needed = "; ".join(
        f"{r.server}: 0.6 x {r.ceiling:,.0f}/s leaves 2 cores / {0.6 * r.ceiling:,.0f}"
        f" = {2000 / (0.6 * r.ceiling):.2f} ms per delivery for everything"
        for r in rounds
    )
    report = "\n".join(
        [
            "## Delivery (`make bench-delivery`)",
            "",
            f"Per receiver, {REPLIES:,} replies over {CONVERSATIONS:,} conversations written to"
            " `outbound.replies` as fast as the broker takes them, while one delivery process"
            " (already owning its partitions) delivers them: aiohttp client, TLS, both signatures,"
            " the request log entry and the delivery state written to the embedded database for"
            " every reply. Baseline: wrk, 32 connections, against the same receiver process, same"
            " run. Delivery rate: first to last request seen by the receiver.",
            "",
            "| receiver (TLS, one process) | wrk ceiling/s (baseline) | aiohttp client alone/s"
            " (its CPU per request) | HAPP deliveries/s | ratio | arrived | CPU while delivering"
            " (cores of 2) | CPU ms per delivery |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            "Goal: ratio ≥ 0.6 (GUIDE.md measured wrk's ceiling against a uvicorn TLS receiver"
            " at ~3,800/s and an aiohttp client at ~2,300/s). Here the receivers answer faster"
            " than that, and the bound is the machine's two cores, which wrk had to itself:"
            f" {needed}. The embedded database alone takes the CPU shown above per delivery,"
            " for the request-log entry (one `insert_many` document, four indexes) and the"
            " delivery state (one document, one index) that every attempt writes. The aiohttp"
            " client alone needs far less than a delivery: the rest is HAPP's own work per"
            " reply (consuming, decoding, signing, logging, recording) and the database's.",
            "",
            "Command: `make bench-delivery` (`BENCH_REPLIES`, `BENCH_CONVERSATIONS`,"
            " `BENCH_SECONDS`, `BENCH_RECEIVERS=uvicorn,aiohttp` change the run).",
        ]
    )
    print(report)
    record("delivery", report)


if __name__ == "__main__":
    main()
