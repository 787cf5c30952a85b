"""Child processes that never outlive their parent.

Each child starts in its own session (Ctrl-C in the terminal reaches only the
supervisor, which then stops the children in order) and asks the kernel to
SIGTERM it if the supervisor dies, so no orphan is left even after a SIGKILL.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


# Ports this process has handed out: several are chosen before any is bound (a
# stack's services, then its broker), and the kernel may give a port again once
# the socket that found it is closed; two processes were once given the same.
_handed_out: set[int] = set()
# Set by use_port_range: the ports this process may hand out, instead of the kernel's.
_ranges: list[range] = []


def use_port_range(first: int, count: int) -> None:
    """Hand out only ports from ``first`` on. Processes choosing ports side by side
    (the test suite's parallel workers) each take a range of their own below the
    kernel's ephemeral range, so neither can be given a port the other has chosen
    but not bound yet, nor can an outgoing connection take it."""
    _ranges[:] = [range(first, first + count)]


def free_port() -> int:
    """A port free now and not handed out before by this process."""
    for ports in _ranges:
        for port in ports:
            if port not in _handed_out and _bindable(port):
                _handed_out.add(port)
                return port
        raise RuntimeError(f"no free port left in {ports}")
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


class Child:
    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env) if env is not None else dict(os.environ)
        self.log_path = log_path
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    def start(self) -> Child:
        out: IO[bytes] | int | None = None
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = self.log_path.open("ab")
            out = self._log_file
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=self.cwd,
            stdout=out,
            stderr=subprocess.STDOUT if out is not None else None,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            # prctl only, before exec: no lock a thread could hold is touched.
            preexec_fn=_die_with_parent,  # noqa: PLW1509
        )
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def poll(self) -> int | None:
        return self.proc.poll() if self.proc else None

    def terminate(self) -> None:
        """SIGTERM without waiting: several children then stop side by side."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout_s: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._log_file:
            self._log_file.close()
            self._log_file = None
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        data = self.log_path.read_bytes()[-20_000:].decode("utf-8", errors="replace")
        return "\n".join(data.splitlines()[-lines:])


def wait_until(predicate: object, timeout_s: float, what: str, child: Child | None = None) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        if child is not None and child.poll() is not None:
            raise RuntimeError(f"{child.name} exited with {child.poll()}:\n{child.tail()}")
        time.sleep(0.1)
    raise TimeoutError(
        f"{what} not ready after {timeout_s:g} s" + (f"\n{child.tail()}" if child else "")
    )


PYTHON = sys.executable
