"""Records a consumer can never handle are parked on its dead-letter topic, not
dropped and not retried forever: counted, listed by the admin API, replayable."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer

from happ_common.topics import INBOUND_MESSAGES, OUTBOUND_REPLIES
from tests.conftest import System, eventually


async def _produce(system: System, topic: str, value: bytes, key: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=system.stack.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def _letters(system: System, marker: str) -> list[dict[str, Any]]:
    resp = await system.admin.get("/api/dead-letters", params={"limit": 1000})
    assert resp.status_code == 200, resp.text
    return [d for d in resp.json()["items"] if marker in d["value"]]


def _dead_letter_count(metrics: str, consumer: str, topic: str) -> float:
    prefix = f'happ_pipeline_dead_letters_total{{consumer="{consumer}",topic="{topic}"}}'
    for line in metrics.splitlines():
        if line.startswith(prefix):
            return float(line.split()[-1])
    return 0.0


async def test_undecodable_records_are_parked_listed_and_replayable(system: System) -> None:
    marker = uuid.uuid4().hex
    await _produce(system, OUTBOUND_REPLIES, f'{{"not": "a reply {marker}"}}'.encode(), b"k1")
    await _produce(system, INBOUND_MESSAGES, f"garbage {marker}".encode(), b"k2")

    async def both_parked() -> bool:
        return len(await _letters(system, marker)) == 2

    await eventually(both_parked, timeout_s=30)
    letters = {d["origin_topic"]: d for d in await _letters(system, marker)}
    reply = letters[OUTBOUND_REPLIES]
    assert reply["topic"] == "outbound.replies.dlq"
    assert reply["consumer"] == "delivery" and reply["key"] == "k1"
    assert "OutboundReply" in reply["error"]
    assert letters[INBOUND_MESSAGES]["consumer"] == "assistant"

    async with httpx.AsyncClient() as http:
        metrics = (await http.get(system.url("delivery", "/metrics"))).text
    assert _dead_letter_count(metrics, "delivery", OUTBOUND_REPLIES) >= 1

    # Replayed onto its topic, it is consumed again (and, still broken, parked again).
    replayed = await system.admin.post(f"/api/dead-letters/{reply['id']}/replay")
    assert replayed.status_code == 200, replayed.text
    assert replayed.json()["origin_topic"] == OUTBOUND_REPLIES

    async def parked_again() -> bool:
        return len(await _letters(system, marker)) == 3

    await eventually(parked_again, timeout_s=30)


async def test_an_unknown_dead_letter_is_a_404(system: System) -> None:
    for bad in ("outbound.replies.dlq:0:999999", "not-a-topic:0:1", "outbound.replies.dlq:x:1"):
        resp = await system.admin.post(f"/api/dead-letters/{bad}/replay")
        assert resp.status_code == 404, (bad, resp.text)
        assert resp.json()["error"]["code"] == "DEAD_LETTER_NOT_FOUND"
