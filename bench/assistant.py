"""``make bench-assistant``: replies per second of one assistant instance against a
fake OpenAI-compatible server that answers after 1 s, and the check that every
conversation's replies came out in order. Writes docs/benchmarks.md.

The messages go straight onto ``inbound.messages`` (the ingress has its own
benchmark) and the replies are read off ``outbound.replies``, so the number is
the assistant's: consume, history, LLM call, MongoDB writes, publish. The run is
repeated for each HTTP transport under the OpenAI SDK, on a fresh channel.
"""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from aiokafka import AIOKafkaProducer

from happ_common.events import InboundMessage, OutboundReply
from happ_common.ids import conversation_key
from happ_common.topics import INBOUND_MESSAGES
from happ_devtools.benchkit import add_channel, cpu_seconds, record
from happ_devtools.local_stack import LocalStack, StackConfig
from happ_devtools.procs import PYTHON, Child, free_port, port_open, wait_until
from happ_devtools.reply_tap import ReplyTap

MESSAGES = int(os.environ.get("BENCH_MESSAGES", "3000"))
CONVERSATIONS = int(os.environ.get("BENCH_CONVERSATIONS", "600"))
LLM_DELAY_S = 1.0
CLIENTS = os.environ.get("BENCH_CLIENTS", "aiohttp,httpx").split(",")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))


@dataclass(frozen=True)
class Run:
    client: str
    messages: int
    replies: int
    seconds: float
    steady_per_s: float
    p50_s: float
    p99_s: float
    out_of_order: int
    duplicates: int
    cpu_s: float
    db_cpu_s: float
    batch_sizes: dict[str, float]
    stages: dict[str, float]

    @property
    def per_s(self) -> float:
        return self.replies / self.seconds


Snapshot = dict[str, tuple[float, float]]  # label -> (sum, count)


def histogram(port: int, metric: str, label: str) -> Snapshot:
    """Sum and count of each labelled series of a histogram, from the process's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    series = rf'{metric}_%s\{{{label}="(\w+)"\}} ([\d.e+-]+)'
    sums = dict(re.findall(series % "sum", text))
    counts = dict(re.findall(series % "count", text))
    return {k: (float(sums[k]), float(c)) for k, c in counts.items()}


def means(before: Snapshot, after: Snapshot) -> dict[str, float]:
    """Mean of each series over what happened between two snapshots."""
    out = {}
    for k, (total, count) in after.items():
        total0, count0 = before.get(k, (0.0, 0.0))
        if count > count0:
            out[k] = (total - total0) / (count - count0)
    return out


async def produce(
    bootstrap: str, channel_id: str, conversations: int, per_conversation: int
) -> tuple[dict[str, list[str]], dict[str, float]]:
    """Interleaved, as many users writing at once: round r holds message r of every
    conversation. Returns each conversation's message ids in order and send times."""
    order: dict[str, list[str]] = defaultdict(list)
    sent_at: dict[str, float] = {}
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = []
        for i in range(per_conversation):
            for c in range(conversations):
                sender = f"user_{c}"
                msg = InboundMessage(
                    channel_id=channel_id,
                    message_id=f"m_{uuid.uuid4().hex}",
                    sender_id=sender,
                    text=f"Message {i} from {sender}: what is the status of my order?",
                    metadata={"bench": True, "i": i},
                    received_at=datetime.now(UTC),
                )
                order[sender].append(msg.message_id)
                sent_at[msg.message_id] = time.monotonic()
                futures.append(
                    await producer.send(
                        INBOUND_MESSAGES,
                        msg.model_dump_json().encode(),
                        key=conversation_key(channel_id, sender),
                    )
                )
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return order, sent_at


async def wait_for(tap: ReplyTap, channel_id: str, count: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while len({r.reply_id for _, r in tap.timed(channel_id)}) < count:
        if time.monotonic() > deadline:
            return
        await asyncio.sleep(0.05)


def database_pid(stack: LocalStack) -> int | None:
    return next((c.pid for c in stack.infra_children if "mongodb" in c.name), None)


async def measure(stack: LocalStack, client: str, assistant: Child, rounds: int) -> list[Run]:
    bootstrap = stack.kafka_bootstrap
    tap = ReplyTap(bootstrap)
    await tap.start()
    try:
        # Warm-up: the consumer group has formed and the connections are open.
        warm = await add_channel(stack.mongodb_uri)
        await produce(bootstrap, warm, 20, 1)
        await wait_for(tap, warm, 20, 90)
        return [await one_round(stack, client, assistant, tap) for _ in range(rounds)]
    finally:
        await tap.stop()


async def one_round(stack: LocalStack, client: str, assistant: Child, tap: ReplyTap) -> Run:
    """A fresh channel, so every conversation starts new."""
    assert assistant.pid is not None
    port = stack.config.ports["assistant"]
    channel = await add_channel(stack.mongodb_uri)
    per_conversation = max(1, MESSAGES // CONVERSATIONS)
    db_pid = database_pid(stack)
    cpu_before = cpu_seconds(assistant.pid)
    db_before = cpu_seconds(db_pid) if db_pid else 0.0
    batches_before = histogram(port, "happ_db_batch_size", "batch")
    stages_before = histogram(port, "happ_assistant_stage_seconds", "stage")
    started = time.monotonic()
    order, sent_at = await produce(stack.kafka_bootstrap, channel, CONVERSATIONS, per_conversation)
    total = sum(len(ids) for ids in order.values())
    await wait_for(tap, channel, total, 60 + total / 20)
    cpu = cpu_seconds(assistant.pid) - cpu_before
    db_cpu = cpu_seconds(db_pid) - db_before if db_pid else 0.0
    seen = tap.timed(channel)

    first: dict[str, tuple[float, OutboundReply]] = {}
    for at, reply in seen:
        first.setdefault(reply.reply_id, (at, reply))
    replies = sorted(first.values(), key=lambda x: x[0])
    got: dict[str, list[str]] = defaultdict(list)
    for _, reply in replies:
        got[reply.to].append(reply.in_reply_to or "")
    # Out of order: a conversation whose replies answer its messages in another order
    # (a missing reply shows in the reply count instead).
    out_of_order = 0
    for sender, ids in order.items():
        position = {mid: i for i, mid in enumerate(ids)}
        answered = [position[mid] for mid in got.get(sender, [])]
        if answered != sorted(answered):
            out_of_order += 1
    finished = replies[-1][0] if replies else time.monotonic()
    latencies = sorted(at - sent_at[r.in_reply_to or ""] for at, r in replies)
    # The middle 80 %: the rate once every conversation is busy, without the ramp.
    lo, hi = int(len(replies) * 0.1), int(len(replies) * 0.9)
    steady = (hi - lo) / (replies[hi][0] - replies[lo][0]) if hi > lo else 0.0
    return Run(
        client=client,
        messages=total,
        replies=len(replies),
        seconds=finished - started,
        steady_per_s=steady,
        p50_s=latencies[len(latencies) // 2] if latencies else 0.0,
        p99_s=latencies[int(len(latencies) * 0.99) - 1] if latencies else 0.0,
        out_of_order=out_of_order,
        duplicates=len(seen) - len(replies),
        cpu_s=cpu,
        db_cpu_s=db_cpu,
        batch_sizes=means(batches_before, histogram(port, "happ_db_batch_size", "batch")),
        stages=means(stages_before, histogram(port, "happ_assistant_stage_seconds", "stage")),
    )


def main() -> None:
    data = Path(tempfile.mkdtemp(prefix="happ-bench-"))
    ports = {name: free_port() for name in ("ingress", "admin", "assistant", "delivery")}
    llm_port = free_port()
    env = {"OPENAI_API_KEY": "bench", "OPENAI_BASE_URL": f"http://127.0.0.1:{llm_port}/v1"}
    stack = LocalStack(StackConfig(data_dir=data, ports=ports, env=env))
    llm = Child(
        "fake-llm",
        [PYTHON, "-m", "happ_devtools.fake_llm", "--port", str(llm_port), "--delay", "1"],
        log_path=data / "logs" / "fake-llm.log",
    )
    runs: list[Run] = []
    try:
        stack.start_infra()
        llm.start()
        wait_until(lambda: port_open(llm_port), 30, "fake LLM", llm)
        for client in CLIENTS:
            stack.config.env["HAPP_ASSISTANT_LLM_HTTP_CLIENT"] = client
            assistant = stack.start_service("assistant")
            stack.wait_ready("assistant")
            try:
                client_runs = asyncio.run(measure(stack, client, assistant, ROUNDS))
            finally:
                assistant.stop()
            for run in client_runs:
                print(
                    f"{client}: {run.replies}/{run.messages} replies in {run.seconds:.1f} s = "
                    f"{run.per_s:.0f}/s (steady {run.steady_per_s:.0f}/s), "
                    f"out of order: {run.out_of_order}, CPU {run.cpu_s:.1f} s, database CPU {run.db_cpu_s:.1f} s; mean stage ms: "
                    + ", ".join(f"{k} {v * 1000:.0f}" for k, v in run.stages.items()),
                    flush=True,
                )
            runs.extend(client_runs)
    finally:
        llm.stop()
        stack.stop()
    report = render(runs)
    print(report)
    record("assistant", report)
    sys.exit(0)


def render(runs: list[Run]) -> str:
    per_conversation = max(1, MESSAGES // CONVERSATIONS)
    lines = [
        "## Assistant (`make bench-assistant`)",
        "",
        "One assistant process; a fake OpenAI-compatible server (`python -m happ_devtools.fake_llm --delay 1`)"
        f" answering every call after {LLM_DELAY_S:g} s; per round {CONVERSATIONS * per_conversation:,} `InboundMessage`s over"
        f" {CONVERSATIONS} new conversations ({per_conversation} each, interleaved) produced straight onto"
        " `inbound.messages`, replies read off `outbound.replies`. Embedded broker and database, 12 partitions,"
        " default settings. Time runs from the first message produced to the last reply seen; latency from a"
        " message's send to its reply. CPU is per reply, of the assistant and of the embedded database.",
        "",
        "| LLM HTTP transport | round | replies | replies/s | steady replies/s (middle 80 %) | p50 s | p99 s"
        " | conversations out of order | duplicate replies | assistant CPU ms | database CPU ms"
        " | mean batch (incoming / replies / conversations / histories) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    clients = list(dict.fromkeys(r.client for r in runs))
    for client in clients:
        mine = [r for r in runs if r.client == client]
        for i, r in enumerate(mine, 1):
            b = r.batch_sizes
            batches = " / ".join(
                f"{b.get(k, 0):.0f}"
                for k in (
                    "assistant_incoming_writes",
                    "assistant_reply_writes",
                    "assistant_conversation_writes",
                    "assistant_history_reads",
                )
            )
            lines.append(
                f"| {client}{' (default)' if client == 'aiohttp' else ''} | {i} | {r.replies:,}/{r.messages:,}"
                f" | **{r.per_s:,.0f}** | {r.steady_per_s:,.0f} | {r.p50_s:.2f} | {r.p99_s:.2f}"
                f" | {r.out_of_order} | {r.duplicates} | {r.cpu_s / r.replies * 1000:.2f}"
                f" | {r.db_cpu_s / r.replies * 1000:.2f} | {batches} |"
            )
    lines.append("")
    for client in clients:
        mine = [r for r in runs if r.client == client]
        rates = sorted(r.per_s for r in mine)
        stages = {k: statistics.mean(r.stages.get(k, 0.0) for r in mine) for k in mine[0].stages}
        lines.append(
            f"- **{client}: median {statistics.median(rates):,.0f} replies/s** (range {rates[0]:,.0f} to {rates[-1]:,.0f});"
            " mean time per message in each stage: "
            + ", ".join(f"{k} {v * 1000:,.0f} ms" for k, v in stages.items())
            + "."
        )
    lines += [
        "",
        "Goal: ≥ 200 replies/s for one instance, every conversation's replies in order"
        " (its replies' `in_reply_to` sequence equals its messages' order). The messages all arrive at"
        " once and the fake answers in exactly 1 s, so the conversations move in waves: each wave's"
        " writes reach the embedded database together (its CPU per reply is the bound here), then wait"
        " on the LLM together.",
        "",
        "Command: `make bench-assistant` (`uv run python bench/assistant.py`; `BENCH_MESSAGES`,"
        " `BENCH_CONVERSATIONS`, `BENCH_ROUNDS`, `BENCH_CLIENTS=aiohttp,httpx` change the run).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
