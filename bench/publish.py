"""``make bench-publish``: CPU per published message, FastStream's ``KafkaBroker``
against aiokafka's producer, 64 publishes in flight, acks=all, same broker and
run. The ingress publishes with aiokafka because of this number."""

from __future__ import annotations

import asyncio
import resource
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import uvloop
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from faststream.kafka import KafkaBroker

from happ_devtools.benchkit import record
from happ_devtools.procs import free_port
from happ_devtools.stack import embedded_broker

N, IN_FLIGHT = 20_000, 64
BODY = b'{"text":"' + b"a" * 300 + b'"}'


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def run(publish: Callable[[int], Awaitable[object]]) -> tuple[float, float]:
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(i: int) -> None:
        async with gate:
            await publish(i)

    started, cpu_started = time.perf_counter(), cpu()
    await asyncio.gather(*(one(i) for i in range(N)))
    elapsed, used = time.perf_counter() - started, cpu() - cpu_started
    return N / elapsed, used / N * 1e6


async def measure(bootstrap: str) -> dict[str, tuple[float, float]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic("bench", 12, 1)])
    await admin.close()
    results: dict[str, tuple[float, float]] = {}
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=1)
    await producer.start()
    headers = [("content-type", b"application/json")]
    await run(lambda i: producer.send_and_wait("bench", BODY, key=str(i).encode(), headers=headers))
    results["aiokafka `send_and_wait`"] = await run(
        lambda i: producer.send_and_wait("bench", BODY, key=str(i).encode(), headers=headers)
    )
    await producer.stop()
    broker = KafkaBroker(bootstrap, acks="all", linger_ms=1)
    await broker.connect()
    fs_headers = {"content-type": "application/json"}
    await run(lambda i: broker.publish(BODY, "bench", key=str(i).encode(), headers=fs_headers))
    results["FastStream `KafkaBroker.publish`"] = await run(
        lambda i: broker.publish(BODY, "bench", key=str(i).encode(), headers=fs_headers)
    )
    await broker.stop()
    return results


def main() -> None:
    port = free_port()
    broker = embedded_broker(port, Path(tempfile.mkdtemp()) / "kafka.log")
    try:
        results = uvloop.run(measure(f"127.0.0.1:{port}"))
    finally:
        broker.stop()
    lines = [
        "## Publishing (`make bench-publish`)",
        "",
        f"{N:,} messages of {len(BODY)} bytes, {IN_FLIGHT} in flight, acks=all, embedded broker, uvloop;",
        "each client warmed up with one full run first.",
        "",
        "| client | messages/s | CPU µs per message |",
        "|---|---|---|",
        *[f"| {name} | {rate:,.0f} | {us:.0f} |" for name, (rate, us) in results.items()],
        "",
        "The ingress publishes once per webhook, so it uses aiokafka directly; the workers",
        "publish through FastStream.",
        "",
        "Command: `make bench-publish`.",
    ]
    report = "\n".join(lines)
    print(report)
    record("publish", report)


if __name__ == "__main__":
    main()
