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
from happ_devtools.procs import PYTHON, Child, free_port, wait_until
from happ_devtools.stack import embedded_broker, embedded_database

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

    @property
    def logs(self) -> Path:
        return self.config.data_dir / "logs"

    def start_infra(self) -> None:
        cfg = self.config
        if not self.kafka_bootstrap:
            port = cfg.kafka_port or free_port()
            self.infra_children.append(embedded_broker(port, self.logs / "kafka.log"))
            self.kafka_bootstrap = f"127.0.0.1:{port}"
        if not self.mongodb_uri:
            port = cfg.mongo_port or free_port()
            self.infra_children.append(
                embedded_database(port, cfg.data_dir / "mongodb", self.logs / "mongodb.log")
            )
            self.mongodb_uri = f"mongodb://127.0.0.1:{port}"
        asyncio.run(self._prepare())

    async def _prepare(self) -> None:
        infra = InfraSettings(
            kafka_bootstrap_servers=self.kafka_bootstrap,
            mongodb_uri=self.mongodb_uri,
            mongodb_db=self.env().get("MONGODB_DB", "happ"),
            kafka_partitions=self.config.partitions,
        )
        await ensure_topics(infra)
        client = mongo.connect(infra)
        try:
            await mongo.ensure_indexes(mongo.database(client, infra), HappSettings())
        finally:
            await client.close()

    def env(self) -> dict[str, str]:
        env = {**self.base_env, **self.config.env}
        env["KAFKA_BOOTSTRAP_SERVERS"] = self.kafka_bootstrap
        env["MONGODB_URI"] = self.mongodb_uri
        env["KAFKA_PARTITIONS"] = str(self.config.partitions)
        env.setdefault("HAPP_PUBLIC_URL", f"http://localhost:{self.config.ports['ingress']}")
        for name, port in self.config.ports.items():
            env[f"HAPP_{name.upper()}_PORT"] = str(port)
        return env

    def service_process(
        self, name: str, label: str | None = None, port: int | None = None
    ) -> Child:
        """A process of service ``name`` (not started). Another member of the same
        consumer group needs a ``label`` (its log's name) and a ``port`` of its own."""
        env = self.env()
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
        # Services first (they flush logs and commit offsets), infrastructure last.
        for child in reversed(list(self.services.values())):
            child.stop()
        for child in reversed(self.infra_children):
            child.stop()
