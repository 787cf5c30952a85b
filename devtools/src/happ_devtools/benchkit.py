"""Shared pieces of the benchmarks: wrk runs, an open-loop load generator and
the ``docs/benchmarks.md`` writer. Benchmarks print numbers next to a baseline
measured in the same run; they never assert on time."""

from __future__ import annotations

import asyncio
import os
import platform
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

DOCS = Path(__file__).resolve().parents[3] / "docs" / "benchmarks.md"


@dataclass(frozen=True)
class WrkResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    errors: int


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(
    url: str, body: bytes, *, seconds: int = 10, connections: int = 64, threads: int = 2
) -> WrkResult:
    if shutil.which("wrk") is None:
        raise SystemExit(
            "wrk is not installed: apt-get install -y wrk (the Makefile's bench targets do it)"
        )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        escaped = body.decode().replace("\\", "\\\\").replace('"', '\\"')
        script.write(
            'wrk.method = "POST"\n'
            f'wrk.body = "{escaped}"\n'
            'wrk.headers["Content-Type"] = "application/json"\n'
        )
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            script.name,
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return WrkResult(
        requests_per_s=rps,
        p50_ms=p50,
        p99_ms=p99,
        non_2xx=int(non2xx.group(1)) if non2xx else 0,
        errors=sum(int(g) for g in errors.groups()) if errors else 0,
    )


@dataclass(frozen=True)
class RateResult:
    target_per_s: float
    achieved_per_s: float
    p50_ms: float
    p99_ms: float
    failures: int


async def constant_rate(url: str, body: bytes, *, rate_per_s: float, seconds: float) -> RateResult:
    """Open loop: requests start on schedule whether or not earlier ones finished,
    so latency includes any queueing the server causes (no coordinated omission)."""
    latencies: list[float] = []
    failures = 0
    total = int(rate_per_s * seconds)
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=2000)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(scheduled: float) -> None:
            nonlocal failures
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    if resp.status != 200:
                        failures += 1
            except aiohttp.ClientError:
                failures += 1
            latencies.append(time.perf_counter() - scheduled)

        start = time.perf_counter()
        tasks = []
        for i in range(total):
            scheduled = start + i / rate_per_s
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(scheduled)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    latencies.sort()
    return RateResult(
        target_per_s=rate_per_s,
        achieved_per_s=total / elapsed,
        p50_ms=latencies[len(latencies) // 2] * 1000,
        p99_ms=latencies[int(len(latencies) * 0.99) - 1] * 1000,
        failures=failures,
    )


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def record(section: str, markdown: str) -> None:
    """Replace (or add) one section of docs/benchmarks.md, keeping the others."""
    begin, end = f"<!-- {section}:begin -->", f"<!-- {section}:end -->"
    text = (
        DOCS.read_text()
        if DOCS.exists()
        else "# Benchmarks\n\nEach section is written by its `make bench-*` target.\n"
    )
    where = f"{platform.node() or 'this machine'} ({platform.machine()}, {os.cpu_count()} cores)"
    stamp = f"_Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {where}._\n\n"
    block = f"{begin}\n{stamp}{markdown.strip()}\n{end}"
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    DOCS.write_text(text)
