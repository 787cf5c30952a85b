"""``make run``: the whole system on this machine, stopped cleanly by Ctrl-C.

Starts an embedded Kafka-protocol broker and MongoDB-protocol database unless
``KAFKA_BOOTSTRAP_SERVERS`` / ``MONGODB_URI`` point at real ones, creates the
topics, starts the four services as separate processes, and prints the admin
URL, the admin token and a curl example. If any process dies, everything is
stopped and the reason is printed.
"""

from __future__ import annotations

import os
import secrets
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from happ_common.settings import InfraSettings
from happ_devtools.certs import dev_tls
from happ_devtools.local_stack import LocalStack, StackConfig
from happ_devtools.procs import free_port, port_open


def _admin_token(data_dir: Path) -> str:
    if token := os.environ.get("HAPP_ADMIN_TOKEN"):
        return token
    path = data_dir / "admin-token"
    if path.exists():
        return path.read_text().strip()
    token = "happ_" + secrets.token_urlsafe(24)
    path.write_text(token + "\n")
    path.chmod(0o600)
    return token


def _port(preferred: int) -> int:
    return free_port() if port_open(preferred) else preferred


class _Stop(Exception):
    pass


def _raise_stop(signum: int, _frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


def main() -> int:
    data_dir = Path(os.environ.get("HAPP_DATA_DIR", ".happ")).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    tls = dev_tls(data_dir / "tls")
    token = _admin_token(data_dir)
    env = {
        "HAPP_ADMIN_TOKEN": token,
        "HAPP_DELIVERY_CA_FILE": os.environ.get("HAPP_DELIVERY_CA_FILE", str(tls.ca_file)),
        # The demo receiver runs on localhost, so local endpoints are allowed here;
        # production leaves this false.
        "HAPP_ALLOW_PRIVATE_ENDPOINTS": os.environ.get("HAPP_ALLOW_PRIVATE_ENDPOINTS", "true"),
    }
    config = StackConfig(
        data_dir=data_dir,
        env=env,
        kafka_port=_port(9092),
        mongo_port=_port(27017),
        # KAFKA_PARTITIONS as given: against an existing Kafka, the services check
        # that its topics have this many partitions (happ_common.topics).
        partitions=InfraSettings().kafka_partitions,
    )
    for name in list(config.ports):
        config.ports[name] = int(os.environ.get(f"HAPP_{name.upper()}_PORT", config.ports[name]))
    stack = LocalStack(config)
    signal.signal(signal.SIGINT, _raise_stop)
    signal.signal(signal.SIGTERM, _raise_stop)
    code = 0
    try:
        print("Starting infrastructure…", flush=True)
        stack.start_infra()
        print(
            f"  Kafka:   {stack.kafka_bootstrap}"
            + (
                ""
                if os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
                else "  (embedded Tansu, memory storage)"
            )
        )
        print(
            f"  MongoDB: {stack.mongodb_uri}"
            + (
                ""
                if os.environ.get("MONGODB_URI")
                else f"  (embedded SecantusDB, data in {data_dir / 'mongodb'})"
            )
        )
        print("Starting services…", flush=True)
        stack.start_services()
        _banner(config, token, data_dir)
        while True:
            time.sleep(0.5)
            dead = stack.dead()
            if dead is not None:
                print(
                    f"\n{dead.name} exited with code {dead.poll()}; stopping everything.",
                    file=sys.stderr,
                )
                print(f"--- last lines of {dead.name}'s log ---\n{dead.tail()}", file=sys.stderr)
                code = 1
                break
    except _Stop as stop:
        print(f"\n{stop}: stopping…", flush=True)
    except Exception as exc:
        print(f"\nstartup failed: {exc}", file=sys.stderr)
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()
        print("Stopped.", flush=True)
    return code


def _banner(config: StackConfig, token: str, data_dir: Path) -> None:
    p = config.ports
    print(
        f"""
HAPP Custom Messenger is running.

  Admin UI and API  http://localhost:{p["admin"]}/   (API docs: /docs)
  Admin token       {token}
  Webhooks          http://localhost:{p["ingress"]}/webhook/<channel_id>
  Metrics           http://localhost:{{{p["ingress"]},{p["admin"]},{p["assistant"]},{p["delivery"]}}}/metrics
  Logs              {data_dir / "logs"}

Create a channel, then send it a message:

  curl -s -X POST http://localhost:{p["admin"]}/api/channels \\
       -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \\
       -d '{{"name": "My Website", "outgoing_url": "https://localhost:8443/happ"}}'

  curl -s -X POST http://localhost:{p["ingress"]}/webhook/<channel_id> \\
       -H 'Content-Type: application/json' \\
       -d '{{"sender_id": "user_42", "text": "Hello!", "metadata": {{"source": "website"}}}}'

Or run `make demo` in another terminal: it starts an HTTPS receiver on
https://localhost:8443, creates a channel and shows a signed reply arriving.

Press Ctrl-C to stop.
""",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
