"""free_port: the ports a test run picks before it binds them must not collide."""

from __future__ import annotations

import socket

from happ_devtools.procs import free_port


def test_free_port_never_hands_out_a_port_twice_and_each_was_free() -> None:
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[-1]))  # still free: nothing holds it
