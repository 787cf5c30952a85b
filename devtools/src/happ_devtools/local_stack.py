"""The whole system on one machine: infrastructure, topics, indexes, four services.

``make run`` and the end-to-end tests start the system through this one class,
so the tests exercise exactly what a developer runs.
"""

from __future__ import annotations

import asyncio
import os
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from happ_common import mongo
from happ_common.settings import HappSettings, InfraSettings
from happ_common.topics import ensure_topics
from happ_devtools.certs import DevTls
from happ_devtools.procs import PYTHON, Child, free_port, wait_until
from happ_devtools.stack import embedded_broker, embedded_database, kafka_tls_proxy

SERVICES = ("ingress", "admin", "assistant", "delivery")
DEFAULT_PORTS = {"ingress": 8080, "admin": 8081, "assistant": 8082, "delivery": 8083}


@dataclass
class StackConfig:
    data_dir: Path
    env: dict[str, str] = field(default_factory=dict)  # extra variables for the services
    ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    kafka_port: int | None = None
    mongo_port: int | None = None
    partitions: int = 12
    # Serve the embedded broker over TLS only (a stunnel proxy with this certificate).
    kafka_tls: DevTls | None = None


def wait_ready(port: int, child: Child, timeout_s: float = 60) -> None:
    """Wait for the service ``child`` listening on ``port`` to answer /readyz with 200."""
    wait_until(lambda: _ready(port), timeout_s, f"{child.name} on :{port}", child)


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


class LocalStack:
    def __init__(self, config: StackConfig, base_env: Mapping[str, str] | None = None) -> None:
        self.config = config
        self.base_env = dict(base_env if base_env is not None else os.environ)
        self.infra_children: list[Child] = []
        self.services: dict[str, Child] = {}
        self.kafka_bootstrap = self.base_env.get("KAFKA_BOOTSTRAP_SERVERS", "")
        self.mongodb_uri = self.base_env.get("MONGODB_URI", "")
        self.embedded_kafka = False
        self.embedded_database = not self.mongodb_uri

    @property
    def logs(self) -> Path:
        return self.config.data_dir / "logs"

    def start_infra(self) -> None:
        cfg = self.config
        if not self.kafka_bootstrap:
            self.embedded_kafka = True
            port = cfg.kafka_port or free_port()
            if cfg.kafka_tls is None:
                self.infra_children.append(embedded_broker(port, self.logs / "kafka.log"))
            else:
                # Clients learn the TLS port from the broker's metadata, so every
                # connection after the bootstrap one goes through the proxy too.
                plain = free_port()
                self.infra_children.append(
                    embedded_broker(plain, self.logs / "kafka.log", advertised_port=port)
                )
                self.infra_children.append(
                    kafka_tls_proxy(
                        port, plain, cfg.kafka_tls, cfg.data_dir, self.logs / "stunnel.log"
                    )
                )
            self.kafka_bootstrap = f"127.0.0.1:{port}"
        if not self.mongodb_uri:
            port = cfg.mongo_port or free_port()
            self.infra_children.append(
                embedded_database(port, cfg.data_dir / "mongodb", self.logs / "mongodb.log")
            )
            self.mongodb_uri = f"mongodb://127.0.0.1:{port}"
        asyncio.run(self._prepare())

    async def _prepare(self) -> None:
        infra = self.infra()
        await ensure_topics(infra)
        client = mongo.connect(infra)
        try:
            await mongo.ensure_indexes(mongo.database(client, infra), HappSettings())
        finally:
            await client.close()

    def infra(self) -> InfraSettings:
        """The infrastructure settings the services get, for this process's clients."""
        env = self.env()
        given = {
            name: env[name.upper()] for name in InfraSettings.model_fields if name.upper() in env
        }
        return InfraSettings.model_validate(given)

    def env(self) -> dict[str, str]:
        env = {**self.base_env, **self.config.env}
        env["KAFKA_BOOTSTRAP_SERVERS"] = self.kafka_bootstrap
        env["MONGODB_URI"] = self.mongodb_uri
        env["KAFKA_PARTITIONS"] = str(self.config.partitions)
        if self.embedded_kafka:
            # It answers InitProducerId with an error, and holds every fetch for
            # its longest wait (see InfraSettings).
            env.setdefault("KAFKA_ENABLE_IDEMPOTENCE", "false")
            env.setdefault("KAFKA_FETCH_MAX_WAIT_MS", "20")
        if self.embedded_database:
            # A pure-Python server on one core: its round trips are long well
            # before a production MongoDB's would be (docs/benchmarks.md).
            env.setdefault("HAPP_ASSISTANT_DB_LATENCY_TARGET_MS", "20")
        if self.config.kafka_tls is not None:
            env["KAFKA_SECURITY_PROTOCOL"] = "SSL"
            env["KAFKA_SSL_CA_FILE"] = str(self.config.kafka_tls.ca_file)
        env.setdefault("HAPP_PUBLIC_URL", f"http://localhost:{self.config.ports['ingress']}")
        for name, port in self.config.ports.items():
            env[f"HAPP_{name.upper()}_PORT"] = str(port)
        return env

    def service_process(
        self,
        name: str,
        label: str | None = None,
        port: int | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Child:
        """A process of service ``name`` (not started). Another member of the same
        consumer group needs a ``label`` (its log's name) and a ``port`` of its own;
        ``env`` overrides the stack's settings for this process."""
        env = {**self.env(), **(env or {})}
        if port is not None:
            env[f"HAPP_{name.upper()}_PORT"] = str(port)
        label = label or name
        return Child(
            label, [PYTHON, "-m", f"happ_{name}"], env=env, log_path=self.logs / f"{label}.log"
        )

    def start_service(self, name: str) -> Child:
        child = self.service_process(name).start()
        self.services[name] = child
        return child

    def wait_ready(self, name: str, timeout_s: float = 60) -> None:
        wait_ready(self.config.ports[name], self.services[name], timeout_s)

    def start_services(self) -> None:
        for name in SERVICES:
            self.start_service(name)
        for name in SERVICES:
            self.wait_ready(name)

    def dead(self) -> Child | None:
        for child in [*self.infra_children, *self.services.values()]:
            if child.poll() is not None:
                return child
        return None

    def stop(self) -> None:
        # Services first (they flush logs and commit offsets), all at once: each
        # takes a second or two to leave its group, and none waits on another.
        # Infrastructure last.
        for child in self.services.values():
            child.terminate()
        for child in reversed(list(self.services.values())):
            child.stop()
        for child in reversed(self.infra_children):
            child.stop()
