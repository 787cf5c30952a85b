"""The fault harness: a whole system of its own per scenario, and the faults.

Each scenario runs on a fresh embedded broker and database with the four
services as processes (``running_system``, as the end-to-end tests do): about
13 s to start on this machine, and nothing left by one scenario can reach the
next. ``Faults`` adds what a scenario does to it: further members of the
assistant or delivery group, SIGTERM / SIGKILL / restart of a member, the
database SIGKILLed and restarted on its storage, the broker SIGSTOPped (its
data is in memory: never SIGKILL it). Then ``verdict`` waits for the system to
settle and judges the invariants (``judge.py``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from happ_devtools.certs import DevTls
from happ_devtools.fake_llm import FakeLlm
from happ_devtools.local_stack import SERVICES, wait_ready
from happ_devtools.procs import Child, free_port, port_open, wait_until
from happ_devtools.receiver import Received
from tests.conftest import ARTIFACTS, System, running_system
from tests.faults.judge import Report, first_ok, judge, posts
from tests.faults.load import Load, seq_of

# Topics each consumer group reads: its members' partitions add up to this many
# times the partition count once the group has settled.
GROUP_TOPICS = {"assistant": 1, "delivery": 2}


@dataclass
class Member:
    """One process of a service; a group's second member has a port of its own."""

    service: str
    port: int
    child: Child

    @property
    def name(self) -> str:
        return self.child.name

    @property
    def alive(self) -> bool:
        return self.child.pid is not None and self.child.poll() is None


def refuse_first_attempt(every: int) -> Callable[[Received], tuple[int, float]]:
    """A receiver decision: 503 to the first attempt of every ``every``-th reply
    of each conversation, 200 to everything else."""

    def decide(got: Received) -> tuple[int, float]:
        first_try = got.headers.get("X-HAPP-Attempt") == "1"
        if first_try and seq_of(got.json()["in_reply_to"]) % every == every - 1:
            return (503, 0.0)
        return (200, 0.0)

    return decide


@dataclass
class Faults:
    system: System
    artifacts: Path
    members: dict[str, list[Member]] = field(default_factory=dict)
    crashed: bool = False  # a process was SIGKILLed: repeated POSTs are allowed
    timeline: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        stack = self.system.stack
        for name in SERVICES:
            self.members[name] = [Member(name, stack.config.ports[name], stack.services[name])]

    def note(self, what: str) -> None:
        self.timeline.append(f"{time.monotonic() - self.started:6.1f} s  {what}")

    def member(self, service: str, index: int = 0) -> Member:
        return self.members[service][index]

    def live(self, service: str) -> list[Member]:
        return [m for m in self.members[service] if m.alive]

    # -- the system's front ------------------------------------------------------

    async def channel(self, path: str) -> str:
        """A new channel whose replies go to the receiver's ``path``; its webhook URL."""
        created = await self.system.create_channel(path)
        return self.system.url("ingress", f"/webhook/{created['id']}")

    # -- members -----------------------------------------------------------------

    async def add_member(self, service: str) -> Member:
        label = f"{service}-{len(self.members[service]) + 1}"
        port = free_port()
        child = self.system.stack.service_process(service, label, port).start()
        member = Member(service, port, child)
        self.members[service].append(member)
        self.note(f"start {label}")
        await asyncio.to_thread(wait_ready, port, child)
        self.note(f"{label} ready")
        return member

    async def sigterm(self, member: Member) -> None:
        self.note(f"SIGTERM {member.name}")
        code = await asyncio.to_thread(member.child.stop, 30)
        self.note(f"{member.name} exited with {code}")

    async def sigkill(self, member: Member) -> None:
        self.crashed = True
        self.note(f"SIGKILL {member.name}")
        await asyncio.to_thread(member.child.kill)
        member.child.stop()  # closes its log

    async def start(self, member: Member) -> None:
        self.note(f"start {member.name}")
        member.child.start()
        await asyncio.to_thread(wait_ready, member.port, member.child)
        self.note(f"{member.name} ready")

    async def restart(self, member: Member) -> None:
        await self.sigterm(member)
        await self.start(member)

    # -- infrastructure ----------------------------------------------------------

    def _infra(self, prefix: str) -> Child:
        return next(c for c in self.system.stack.infra_children if c.name.startswith(prefix))

    async def kill_database(self, down_s: float) -> None:
        """SIGKILL the database, and start it again on its storage ``down_s`` later."""
        db = self._infra("mongodb")
        port = urlsplit(self.system.stack.mongodb_uri).port
        assert port is not None
        # No service dies: a database outage must not repeat any POST (outcomes
        # that could not be recorded are retried in place, never re-sent).
        self.note("SIGKILL the database")
        await asyncio.to_thread(db.kill)
        db.stop()
        try:
            await asyncio.sleep(down_s)
        finally:
            self.note("start the database")
            db.start()
            await asyncio.to_thread(wait_until, lambda: port_open(port), 60, "database", db)
            self.note("database listening")

    @asynccontextmanager
    async def broker_stopped(self) -> AsyncIterator[None]:
        pid = self._infra("kafka").pid
        assert pid is not None
        self.note("SIGSTOP the broker")
        os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(pid, signal.SIGCONT)
            self.note("SIGCONT the broker")

    async def pause_broker(self, paused_s: float) -> None:
        async with self.broker_stopped():
            await asyncio.sleep(paused_s)

    # -- observing ---------------------------------------------------------------

    async def gauge(self, member: Member, metric: str) -> float:
        """A metric of one member, summed over its label sets."""
        resp = await self.system.http.get(f"http://127.0.0.1:{member.port}/metrics", timeout=5)
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in resp.text.splitlines()
            if line.startswith((metric + "{", metric + " "))
        )

    async def balanced(self, service: str, timeout_s: float = 45) -> bool:
        """Wait until the live members of ``service``'s group share all its partitions."""
        expected = self.system.stack.config.partitions * GROUP_TOPICS[service]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            live = self.live(service)
            try:
                counts = [await self.gauge(m, "happ_pipeline_assigned_partitions") for m in live]
            except OSError:
                counts = []
            if counts and sum(counts) == expected and all(counts):
                self.note(f"{service} group balanced: {[int(c) for c in counts]}")
                return True
            await asyncio.sleep(0.5)
        self.note(f"{service} group NOT balanced after {timeout_s:g} s")
        return False

    def rss_mb(self) -> dict[str, float]:
        rss = {}
        for member in (m for ms in self.members.values() for m in ms if m.alive):
            status = Path(f"/proc/{member.child.pid}/status").read_text()
            kb = next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))
            rss[member.name] = int(kb) / 1024
        return rss

    async def settle(
        self, loads: Sequence[Load], timeout_s: float = 120, stall_s: float = 15, quiet_s: float = 4
    ) -> None:
        """Wait until every accepted message of ``loads`` has a 2xx reply (then
        ``quiet_s`` more, to catch late repeats), or until ``timeout_s`` passes or
        ``stall_s`` pass without a new reply."""
        wanted = {m for load in loads for m in load.accepted}
        deadline = time.monotonic() + timeout_s
        done, progress_at = -1, time.monotonic()
        while time.monotonic() < deadline:
            now_done = len(wanted & first_ok(posts(self.system.receiver.received)).keys())
            if now_done == len(wanted):
                self.note(f"all {now_done} replies delivered")
                await asyncio.sleep(quiet_s)
                return
            if now_done > done:
                done, progress_at = now_done, time.monotonic()
            elif time.monotonic() - progress_at > stall_s:
                break
            await asyncio.sleep(1.0)
        self.note(f"gave up waiting: {done} of {len(wanted)} replies delivered")

    async def verdict(
        self, loads: Sequence[Load], *, judge_held: bool = True, **settle: float
    ) -> Report:
        """Settle, then judge the invariants over ``loads``; the report is kept
        beside the services' logs."""
        await self.settle(loads, **settle)
        held = None
        if judge_held:
            members = self.live("delivery")
            gauges = [
                await self.gauge(m, "happ_delivery_conversations_waiting_for_retry")
                for m in members
            ]
            held = int(sum(gauges))
        report = Report(self.artifacts.name)
        judge(
            report,
            loads,
            self.system.receiver.received,
            self.system.llm,
            repeats_allowed=self.crashed,
            held=held,
            rss_mb=self.rss_mb(),
        )
        return report

    def keep(self, report: Report) -> None:
        self.artifacts.mkdir(parents=True, exist_ok=True)
        text = report.text() + "\ntimeline:\n" + "\n".join(self.timeline) + "\n"
        (self.artifacts / "report.txt").write_text(text)
        print(text)  # shown with pytest -s, and in a failed test's output


@asynccontextmanager
async def fault_system(
    scenario: str, tls: DevTls, data_dir: Path, llm: FakeLlm, **env: str
) -> AsyncIterator[Faults]:
    """A fresh system for one scenario; its logs and report go to
    ``test-artifacts/faults/<scenario>/``."""
    artifacts = ARTIFACTS / "faults" / scenario
    async with running_system(tls, data_dir, llm, logs_to=artifacts, env=env) as system:
        faults = Faults(system, artifacts)
        try:
            yield faults
        finally:
            # Every member at once (the stack would stop its own one by one);
            # the infrastructure after them.
            members = [m for ms in faults.members.values() for m in ms]
            await asyncio.gather(*(asyncio.to_thread(m.child.stop) for m in members))
