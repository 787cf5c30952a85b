"""``make bench-wait``: webhooks held open for their reply (``Prefer: wait``) on one
ingress process, and what they cost in memory, next to the same number of plain
webhooks in the same run. Writes its section of docs/benchmarks.md.

One ingress, one assistant (no delivery service: the channel's ``delivery`` is
``response``), the fake LLM answering every call after ``BENCH_WAIT_LLM_S``
seconds, so every waiting request is held that long at least. Both phases send
``BENCH_WAIT_REQUESTS`` requests at once, each on its own connection, each in a
conversation of its own, on a fresh ingress process; the plain phase's messages
are answered too, so the waiting phase starts after the assistant drained them.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from pymongo import AsyncMongoClient

from happ_common.channels import Channel
from happ_common.ids import new_channel_id, new_channel_secret
from happ_devtools.benchkit import cpu_seconds, metric, record
from happ_devtools.local_stack import LocalStack, StackConfig
from happ_devtools.procs import PYTHON, Child, free_port, port_open, wait_until

REQUESTS = int(os.environ.get("BENCH_WAIT_REQUESTS", "2000"))
LLM_S = float(os.environ.get("BENCH_WAIT_LLM_S", "10"))
WAIT_S = 30


@dataclass(frozen=True)
class Phase:
    name: str
    statuses: dict[str, int]
    seconds: float
    p50_s: float
    max_s: float
    rss_before_mib: float
    rss_peak_mib: float
    max_waiting: float
    cpu_s: float


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Sampler:
    """The ingress's RSS and waiting requests, sampled every 100 ms in a thread
    (the event loop is busy sending)."""

    def __init__(self, pid: int, port: int) -> None:
        self.pid, self.port = pid, port
        self.rss_peak = 0.0
        self.waiting_peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.rss_peak = max(self.rss_peak, rss_mib(self.pid))
            try:
                waiting = metric(self.port, "happ_ingress_waiting_requests")
            except OSError:
                continue
            self.waiting_peak = max(self.waiting_peak, waiting)


async def add_response_channel(mongodb_uri: str) -> str:
    now = datetime.now(UTC)
    channel = Channel(
        id=new_channel_id(),
        name="bench-wait",
        delivery="response",
        hmac_secret=new_channel_secret(),
        rate_limit_per_second=100_000,
        created_at=now,
        updated_at=now,
    )
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongodb_uri)
    try:
        await client.happ.channels.insert_one(channel.to_document())
    finally:
        await client.close()
    return channel.id


async def burst(url: str, count: int, wait: bool) -> tuple[dict[str, int], list[float], float]:
    """``count`` requests at once; the status of each ("200 replied", "202
    accepted"...), their durations and the time until the last answer."""
    headers = {"Prefer": f"wait={WAIT_S}"} if wait else {}
    statuses: dict[str, int] = {}
    durations: list[float] = []
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=WAIT_S + 60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(i: int) -> None:
            body = {
                "sender_id": f"user_{i}",
                "text": f"Question {i}",
                "message_id": uuid.uuid4().hex,
            }
            started = time.monotonic()
            try:
                async with session.post(url, json=body, headers=headers) as resp:
                    answer = await resp.json()
                    outcome = f"{resp.status} {answer.get('status', answer.get('error'))}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                outcome = type(exc).__name__
            durations.append(time.monotonic() - started)
            statuses[outcome] = statuses.get(outcome, 0) + 1

        started = time.monotonic()
        await asyncio.gather(*(one(i) for i in range(count)))
        return statuses, sorted(durations), time.monotonic() - started


async def phase(name: str, stack: LocalStack, ingress: Child, channel: str, wait: bool) -> Phase:
    assert ingress.pid is not None
    port = stack.config.ports["ingress"]
    url = f"http://127.0.0.1:{port}/webhook/{channel}"
    before = rss_mib(ingress.pid)
    cpu_before = cpu_seconds(ingress.pid)
    with Sampler(ingress.pid, port) as sampler:
        statuses, durations, seconds = await burst(url, REQUESTS, wait)
    return Phase(
        name=name,
        statuses=statuses,
        seconds=seconds,
        p50_s=durations[len(durations) // 2],
        max_s=durations[-1],
        rss_before_mib=before,
        rss_peak_mib=max(sampler.rss_peak, before),
        max_waiting=sampler.waiting_peak,
        cpu_s=cpu_seconds(ingress.pid) - cpu_before,
    )


async def drained(stack: LocalStack, channel: str, expected: int) -> None:
    """Every message of the plain phase answered, so the waiting phase starts
    with an idle assistant."""
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(stack.mongodb_uri)
    try:
        deadline = time.monotonic() + 120 + expected * LLM_S / 500
        while time.monotonic() < deadline:
            replies = await client.happ.messages.count_documents(
                {"channel_id": channel, "role": "assistant"}
            )
            if replies >= expected:
                return
            await asyncio.sleep(1)
    finally:
        await client.close()


async def measure(stack: LocalStack) -> list[Phase]:
    phases = []
    for name, wait in (("plain", False), (f"Prefer: wait={WAIT_S}", True)):
        # A fresh ingress per phase: Python keeps the memory a phase took, so the
        # second phase on the same process would reuse the first one's.
        ingress = stack.start_service("ingress")
        try:
            await asyncio.to_thread(stack.wait_ready, "ingress")
            # Warm-up: the reply reader, connections and caches in place.
            warm = await add_response_channel(stack.mongodb_uri)
            port = stack.config.ports["ingress"]
            await burst(f"http://127.0.0.1:{port}/webhook/{warm}", 20, wait=True)
            channel = await add_response_channel(stack.mongodb_uri)
            phases.append(await phase(name, stack, ingress, channel, wait))
            # Every message answered, so the next phase starts with an idle assistant.
            await drained(stack, channel, REQUESTS)
        finally:
            ingress.stop()
    return phases


def main() -> None:
    data = Path(tempfile.mkdtemp(prefix="happ-bench-wait-"))
    ports = {name: free_port() for name in ("ingress", "admin", "assistant", "delivery")}
    llm_port = free_port()
    env = {"OPENAI_API_KEY": "bench", "OPENAI_BASE_URL": f"http://127.0.0.1:{llm_port}/v1"}
    stack = LocalStack(StackConfig(data_dir=data, ports=ports, env=env))
    llm = Child(
        "fake-llm",
        [PYTHON, "-m", "happ_devtools.fake_llm", "--port", str(llm_port), "--delay", f"{LLM_S}"],
        log_path=data / "logs" / "fake-llm.log",
    )
    try:
        stack.start_infra()
        llm.start()
        wait_until(lambda: port_open(llm_port), 30, "fake LLM", llm)
        stack.start_service("assistant")
        stack.wait_ready("assistant")
        phases = asyncio.run(measure(stack))
    finally:
        llm.stop()
        stack.stop()
    for p in phases:
        print(p, flush=True)
    report = render(phases)
    print(report)
    record("wait", report)
    sys.exit(0)


def render(phases: list[Phase]) -> str:
    lines = [
        "## Waiting webhooks (`make bench-wait`)",
        "",
        f"One ingress process (one uvicorn worker), one assistant; a channel with `delivery: response`;"
        f" the fake LLM answers every call after {LLM_S:g} s. Each phase sends {REQUESTS:,} webhooks at"
        " once, each on its own connection, in a conversation of its own, without `message_id`, on a fresh"
        " ingress process: first plain ones (the baseline), then, once the assistant has answered"
        f" those, the same number with `Prefer: wait={WAIT_S}`,"
        " which the ingress holds until the reply is on `outbound.replies`. RSS is the ingress"
        ' process\'s, sampled every 100 ms; "held at once" is the peak of'
        " `happ_ingress_waiting_requests`.",
        "",
        "| requests | answers | all answered in s | p50 s | slowest s | held at once"
        " | ingress RSS before → peak MiB | peak - before MiB | ingress CPU s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in phases:
        answers = ", ".join(f"{n:,}: {s}" for s, n in sorted(p.statuses.items()))
        lines.append(
            f"| {p.name} | {answers} | {p.seconds:.1f} | {p.p50_s:.2f} | {p.max_s:.2f}"
            f" | {p.max_waiting:,.0f} | {p.rss_before_mib:.0f} → {p.rss_peak_mib:.0f}"
            f" | **{p.rss_peak_mib - p.rss_before_mib:.0f}** | {p.cpu_s:.1f} |"
        )
    plain, waiting = phases[0], phases[-1]
    grown = waiting.rss_peak_mib - waiting.rss_before_mib
    baseline = plain.rss_peak_mib - plain.rss_before_mib
    held = max(waiting.max_waiting, 1)
    lines += [
        "",
        f"A waiting request is a future and a disconnect watcher, not a worker: {held:,.0f} held at"
        f" once grew the ingress by {grown:.0f} MiB against {baseline:.0f} MiB for the same number"
        f" of plain requests, about {max(grown - baseline, 0) * 1024 / held:.0f} KiB more per waiting"
        " request (its connection, request and task are counted in both). The cap is"
        " `HAPP_INGRESS_MAX_WAITING` (a request beyond it is answered 202 at once).",
        "",
        "Read the memory columns, not the times: a burst of 2,000 new connections on the 2 cores"
        " the client, ingress, assistant, broker and database share is accepted over several"
        " seconds in both phases (why was not investigated here; `make bench-ingress` is the"
        " throughput number), so the waiting phase holds fewer than all of its requests at the"
        " peak, and its times are that spread plus the model's delay.",
        "",
        "Command: `make bench-wait` (`uv run python bench/wait.py`; `BENCH_WAIT_REQUESTS`,"
        " `BENCH_WAIT_LLM_S` change the run).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
