"""Shared pieces of the benchmarks: wrk runs (flat out or paced) and the
``docs/benchmarks.md`` writer. Benchmarks print numbers next to a baseline
measured in the same run; they never assert on time."""

from __future__ import annotations

import os
import platform
import re
import resource
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pymongo import AsyncMongoClient

from happ_common.channels import AssistantSettings, Channel
from happ_common.ids import new_channel_id, new_channel_secret
from happ_devtools.certs import DevTls
from happ_devtools.procs import PYTHON, Child

DOCS = Path(__file__).resolve().parents[3] / "docs" / "benchmarks.md"


@dataclass(frozen=True)
class WrkResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    errors: int
    seconds: float = 0.0
    cpu_s: float = 0.0  # wrk's own CPU time (user + system)

    @property
    def requests(self) -> float:
        return self.requests_per_s * self.seconds


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(
    url: str,
    body: bytes,
    *,
    seconds: int = 10,
    connections: int = 64,
    threads: int = 2,
    mean_delay_ms: float | None = None,
) -> WrkResult:
    """wrk's numbers for POSTing ``body``. With ``mean_delay_ms`` each connection
    waits a random time (uniform, that mean) before each request: a paced load
    whose connections never fall into step, so latency is measured without the
    synchronised bursts of a load generator whose workers all tick together."""
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
        if mean_delay_ms is not None:
            script.write(
                f"function delay()\n  return math.random(0, {round(2 * mean_delay_ms)})\nend\n"
            )
    cpu_before = _children_cpu_s()
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
        seconds=seconds,
        cpu_s=_children_cpu_s() - cpu_before,
    )


def wrk_paced(
    url: str, body: bytes, *, rate_per_s: float, seconds: int, connections: int = 50
) -> WrkResult:
    """About ``rate_per_s`` requests per second in all, spread over ``connections``
    connections that each wait a random delay between requests.

    Each request's own latency adds to its connection's gap, so a run that falls
    short of the rate is repeated once with the gap shortened by what it fell
    short; the result states the rate achieved."""
    gap_ms = connections / rate_per_s * 1000
    result = wrk(url, body, seconds=seconds, connections=connections, mean_delay_ms=gap_ms)
    if 0 < result.requests_per_s < 0.97 * rate_per_s:
        # Each connection's measured cycle was connections/achieved; take the
        # excess over the intended gap off the gap.
        excess_ms = (connections / result.requests_per_s) * 1000 - gap_ms
        result = wrk(
            url,
            body,
            seconds=seconds,
            connections=connections,
            mean_delay_ms=max(0.0, gap_ms - excess_ms),
        )
    return result


def metric(port: int, name: str) -> float:
    """Sum of a metric's samples on a service's /metrics."""
    return sum(metric_samples(port, name).values())


def metric_samples(port: int, name: str) -> dict[str, float]:
    """A metric's samples on a service's /metrics, by their label text
    (``'{collection="messages",operation="insert"}'``; ``''`` without labels)."""
    import urllib.request  # noqa: PLC0415

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#") and line[len(name)] in " {":
            series, value = line.rsplit(" ", 1)
            samples[series[len(name) :]] = float(value)
    return samples


async def add_channel(
    mongodb_uri: str, outgoing_url: str = "https://localhost/x", model: str | None = None
) -> str:
    """A connected channel written straight to the database, its rate limit out
    of the way, its assistant asking ``model`` (the default if None); returns its id."""
    now = datetime.now(UTC)
    channel = Channel(
        id=new_channel_id(),
        name="bench",
        outgoing_url=outgoing_url,
        hmac_secret=new_channel_secret(),
        rate_limit_per_second=100_000,
        assistant=AssistantSettings(model=model),
        created_at=now,
        updated_at=now,
    )
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongodb_uri)
    try:
        await client.happ.channels.insert_one(channel.to_document())
    finally:
        await client.close()
    return channel.id


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


def receiver_process(name: str, port: int, tls: DevTls, log_path: Path, *options: str) -> Child:
    """The benchmark receiver (``happ_devtools.receiver``) on ``port`` with the
    development certificate, not started; ``options``: ``--server uvicorn``,
    ``--record``."""
    command = [PYTHON, "-m", "happ_devtools.receiver", *options, "--port", str(port)]
    command += ["--cert", str(tls.cert_file), "--key", str(tls.key_file)]
    return Child(name, command, log_path=log_path)
