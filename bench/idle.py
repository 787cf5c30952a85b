"""``make bench-idle``: what a running system costs while nothing happens, per
process, at two consumer fetch waits, in the same run. Writes its section of
docs/benchmarks.md.

The embedded broker holds every fetch for its whole wait (README, "the local
stack's consumers fetch with a 20 ms wait"), so its consumers' idle polling is
CPU spent for nothing. ``make run`` uses 20 ms for the latency of each hop; the
tests use 100 ms because they run several systems at once on two cores. Each
phase starts the local stack (embedded broker and database, the four services)
with a fake LLM, waits for every service to be ready, lets it settle, then
measures each process's CPU over ``BENCH_IDLE_S`` seconds.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path

from happ_devtools import fake_llm
from happ_devtools.benchkit import cpu_seconds, record
from happ_devtools.fake_llm import FakeLlm
from happ_devtools.local_stack import SERVICES, LocalStack, StackConfig
from happ_devtools.procs import free_port

IDLE_S = float(os.environ.get("BENCH_IDLE_S", "30"))
SETTLE_S = 5.0
WAITS_MS = (20, 100)


def measure(fetch_wait_ms: int, llm_port: int) -> dict[str, float]:
    """Each process's idle CPU, in % of one core."""
    with tempfile.TemporaryDirectory() as data:
        env = {
            "KAFKA_FETCH_MAX_WAIT_MS": str(fetch_wait_ms),
            "HAPP_ADMIN_TOKEN": "bench",
            "OPENAI_API_KEY": "bench",
            "OPENAI_BASE_URL": f"http://127.0.0.1:{llm_port}/v1",
        }
        config = StackConfig(
            data_dir=Path(data), env=env, ports={name: free_port() for name in SERVICES}
        )
        stack = LocalStack(config)
        try:
            stack.start_infra()
            stack.start_services()
            time.sleep(SETTLE_S)
            children = {
                "broker" if i == 0 else "database": c for i, c in enumerate(stack.infra_children)
            } | dict(stack.services)
            before = {name: cpu_seconds(c.pid) for name, c in children.items()}
            time.sleep(IDLE_S)
            return {
                name: 100 * (cpu_seconds(c.pid) - before[name]) / IDLE_S
                for name, c in children.items()
            }
        finally:
            stack.stop()


async def main() -> None:
    llm_port = free_port()
    runner = await fake_llm.start(FakeLlm(), llm_port)
    try:
        results = {}
        for wait_ms in WAITS_MS:
            results[wait_ms] = await asyncio.to_thread(measure, wait_ms, llm_port)
    finally:
        await runner.cleanup()
    names = list(results[WAITS_MS[0]])
    head = " | ".join(f"{w} ms" for w in WAITS_MS)
    rows = [f"| process | {head} |", "|---|" + "---|" * len(WAITS_MS)]
    for name in [*names, "total"]:
        cells = " | ".join(
            f"{sum(results[w].values()) if name == 'total' else results[w][name]:.1f}"
            for w in WAITS_MS
        )
        rows.append(f"| {name} | {cells} |")
    table = "\n".join(rows)
    print(table)
    record(
        "idle",
        "## A system at rest (`make bench-idle`)\n\n"
        f"CPU of each process, in % of one core, over {IDLE_S:g} s with nothing sent, "
        "at each consumer fetch wait (`KAFKA_FETCH_MAX_WAIT_MS`; `make run` uses 20, the "
        "tests 100), same run:\n\n" + table + "\n",
    )


if __name__ == "__main__":
    asyncio.run(main())
