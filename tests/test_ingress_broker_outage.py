"""Never a 200 without the broker's ack: while the broker is down the webhook
answers 503 with Retry-After, and it recovers by itself when the broker returns.

This test runs its own broker and its own ingress process (sharing the session's
database), since stopping the shared broker would disturb every other test.
"""

from __future__ import annotations

import asyncio

import httpx

from happ_common.settings import InfraSettings
from happ_common.topics import ensure_topics
from happ_devtools.procs import PYTHON, Child, free_port, port_open, wait_until
from happ_devtools.stack import embedded_broker
from tests.conftest import System


async def test_broker_outage_gives_503_then_recovers(system: System) -> None:
    channel = await system.create_channel("/outage")
    kafka_port, ingress_port = free_port(), free_port()
    logs = system.stack.logs
    broker = await asyncio.to_thread(embedded_broker, kafka_port, logs / "outage-kafka.log")
    infra = InfraSettings(kafka_bootstrap_servers=f"127.0.0.1:{kafka_port}", kafka_partitions=2)
    await ensure_topics(infra)
    env = {
        **system.stack.env(),
        "KAFKA_BOOTSTRAP_SERVERS": infra.kafka_bootstrap_servers,
        "KAFKA_PARTITIONS": str(infra.kafka_partitions),
        "HAPP_INGRESS_PORT": str(ingress_port),
        "HAPP_INGRESS_PUBLISH_TIMEOUT_S": "1",
    }
    ingress = Child(
        "outage-ingress",
        [PYTHON, "-m", "happ_ingress"],
        env=env,
        log_path=logs / "outage-ingress.log",
    ).start()
    url = f"http://127.0.0.1:{ingress_port}/webhook/{channel['id']}"
    try:
        await asyncio.to_thread(wait_until, lambda: port_open(ingress_port), 30, "ingress", ingress)
        async with httpx.AsyncClient(timeout=10) as http:

            async def send(text: str) -> httpx.Response:
                return await http.post(url, json={"sender_id": "u", "text": text})

            assert (await send("before")).status_code == 200

            await asyncio.to_thread(broker.kill)
            during = [await send(f"during {i}") for i in range(3)]
            for resp in during:
                assert resp.status_code == 503, resp.text
                assert resp.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
                assert int(resp.headers["Retry-After"]) >= 1
            ready = await http.get(f"http://127.0.0.1:{ingress_port}/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["kafka"] != "ok"

            # Memory storage: the restarted broker is empty, so topics are made again.
            broker = await asyncio.to_thread(embedded_broker, kafka_port, logs / "outage-kafka.log")
            await ensure_topics(infra)
            statuses: list[int] = []
            for i in range(60):
                statuses.append((await send(f"after {i}")).status_code)
                if statuses[-1] == 200:
                    break
                await asyncio.sleep(0.5)
            assert statuses[-1] == 200, statuses
            assert set(statuses) <= {200, 503}, statuses
    finally:
        await asyncio.to_thread(ingress.stop)
        await asyncio.to_thread(broker.stop)
