"""`make run`'s process supervision: Ctrl-C leaves nothing behind, and one dead
service stops the rest with the reason printed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from happ_devtools.local_stack import SERVICES
from happ_devtools.procs import free_port, port_open

READY_LINE = "Press Ctrl-C to stop."


def _descendants(pid: int) -> set[int]:
    children: dict[int, set[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), set()).add(int(stat.parent.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), set()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class RunningStack:
    def __init__(self, tmp: Path) -> None:
        self.ports = {name: free_port() for name in SERVICES}
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("KAFKA_BOOTSTRAP_SERVERS", "MONGODB_URI")
        }
        env.update({f"HAPP_{n.upper()}_PORT": str(p) for n, p in self.ports.items()})
        env.update({"HAPP_DATA_DIR": str(tmp), "HAPP_ADMIN_TOKEN": "t"})
        self.out = tmp / "run.out"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "happ_devtools.run"],
            env=env,
            stdout=self.out.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, like a terminal job
        )
        deadline = time.monotonic() + 120
        while READY_LINE not in self.output():
            assert self.proc.poll() is None, self.output()
            assert time.monotonic() < deadline, self.output()
            time.sleep(0.2)
        self.children = _descendants(self.proc.pid)

    def output(self) -> str:
        return self.out.read_text(errors="replace")

    def service_pid(self, name: str) -> int:
        for pid in self.children:
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"happ_{name}".encode() in cmd:
                return pid
        raise AssertionError(f"no {name} process among {self.children}")


@pytest.fixture
def running(tmp_path: Path) -> Iterator[RunningStack]:
    stack = RunningStack(tmp_path)
    try:
        yield stack
    finally:
        if stack.proc.poll() is None:
            os.killpg(stack.proc.pid, signal.SIGKILL)
        for pid in stack.children:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_ctrl_c_stops_every_process_and_frees_every_port(running: RunningStack) -> None:
    # infrastructure (2) + four services, at least
    assert len(running.children) >= 6
    assert all(port_open(p) for p in running.ports.values())
    os.killpg(running.proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    assert running.proc.wait(60) == 0, running.output()
    assert "Stopped." in running.output()
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in running.children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in running.children if _alive(p)]
    assert not [p for p in running.ports.values() if port_open(p)]


def test_a_dead_service_stops_the_others_and_says_why(running: RunningStack) -> None:
    os.kill(running.service_pid("delivery"), signal.SIGKILL)
    assert running.proc.wait(60) == 1, running.output()
    assert "delivery exited with code -9; stopping everything." in running.output()
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in running.children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in running.children if _alive(p)]
