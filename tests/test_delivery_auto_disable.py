"""Automatic disable of a channel's deliveries after its endpoint failed
continuously for HAPP_DELIVERY_AUTO_DISABLE_AFTER_HOURS (here 2.5 s), on a system
of its own: the reason is shown, later replies are kept as failed without a
POST, the metric counts it, and connect + recover sends them once it is fixed."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from happ_common.channels import Channel, DeliveriesDisabled
from happ_common.endpoint_health import DISABLED_ERROR_CODE
from happ_delivery.health import EndpointHealth
from happ_devtools.certs import DevTls
from happ_devtools.fake_llm import FakeLlm
from tests.conftest import ARTIFACTS, System, eventually, running_system

# Below the 3 s between the first and the third attempt (retry delays 1 s and
# 2 s): the failing run starts when the first failure is recorded, a few
# milliseconds after that attempt, so exactly 3 s would be decided by them.
AFTER_S = 2.5


async def _metric(system: System, service: str, name: str) -> float:
    text = (await system.http.get(system.url(service, "/metrics"))).text
    found = re.search(rf"^{re.escape(name)} ([\d.e+-]+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def _status(system: System, channel_id: str, message_id: str) -> dict[str, Any]:
    resp = await system.admin.get(f"/api/channels/{channel_id}/messages/{message_id}")
    body: dict[str, Any] = resp.json() if resp.status_code == 200 else {}
    return body


async def _wait_status(system: System, channel_id: str, message_id: str, status: str) -> Any:
    async def reached() -> bool:
        return (await _status(system, channel_id, message_id)).get("status") == status

    await eventually(reached, timeout_s=40)
    return await _status(system, channel_id, message_id)


async def test_a_channel_failing_continuously_is_disabled_then_recovered(
    tls: DevTls, tmp_path: Path
) -> None:
    env = {
        "HAPP_DELIVERY_AUTO_DISABLE_AFTER_HOURS": str(AFTER_S / 3600),
        "HAPP_ADMIN_HEALTH_POLL_S": "0.5",
    }
    async with running_system(
        tls, tmp_path / "happ", FakeLlm(), ARTIFACTS / "auto-disable", env=env
    ) as system:
        path = "/down"
        system.receiver.behaviour[path] = (500, 0.0)
        c = await system.create_channel(path)
        cid = c["id"]
        assert c["deliveries_disabled"] is None and c["endpoint_failing_since"] is None
        start = datetime.now(UTC)

        # Attempts at 0, 1, 3 s fail; the one at 3 s finds the endpoint failing
        # for more than 2.5 s and turns deliveries off; the fourth is not sent.
        first = (await system.send(cid, {"sender_id": "u", "text": "one"})).json()["message_id"]
        failed = await _wait_status(system, cid, first, "failed")
        assert failed["reply"]["delivery"]["last_error_code"] == DISABLED_ERROR_CODE
        assert len(system.receiver.on_path(path)) == 3

        channel = (await system.admin.get(f"/api/channels/{cid}")).json()
        off = channel["deliveries_disabled"]
        assert off is not None and off["reason"] == "endpoint_failing"
        assert off["last_error_code"] == "HTTP_500"
        assert "failed since" in off["message"]
        assert channel["endpoint_failing_since"] == off["failing_since"]
        assert channel["status"] == "connected"  # the webhook still accepts messages

        # Later replies are kept, failed without a POST.
        second = (await system.send(cid, {"sender_id": "u", "text": "two"})).json()["message_id"]
        kept = await _wait_status(system, cid, second, "failed")
        assert kept["reply"]["delivery"]["last_error_code"] == DISABLED_ERROR_CODE
        assert len(system.receiver.on_path(path)) == 3

        assert await _metric(system, "delivery", "happ_delivery_channels_disabled_total") == 1

        async def gauge(value: float) -> bool:
            return await _metric(system, "admin", "happ_channels_deliveries_disabled") == value

        await eventually(lambda: gauge(1), timeout_s=10)

        refused = await system.admin.post(
            f"/api/channels/{cid}/recover", json={"since": start.isoformat()}
        )
        assert refused.status_code == 409
        assert refused.json()["error"]["code"] == "DELIVERIES_DISABLED"

        # The integrator fixes the endpoint; connect, then recover.
        system.receiver.behaviour[path] = (200, 0.0)
        connected = (await system.admin.post(f"/api/channels/{cid}/connect")).json()
        assert connected["deliveries_disabled"] is None
        assert connected["endpoint_failing_since"] is None
        rec = await system.admin.post(
            f"/api/channels/{cid}/recover", json={"since": start.isoformat()}
        )
        assert rec.status_code == 202, rec.text
        await _wait_status(system, cid, first, "delivered")
        await _wait_status(system, cid, second, "delivered")
        resent = [r.json()["text"] for r in system.receiver.on_path(path)[3:]]
        assert resent == ["Echo: one", "Echo: two"]
        await eventually(lambda: gauge(0), timeout_s=10)


# --- the rule itself, without a system --------------------------------------------


class _Repo:
    def __init__(self) -> None:
        self.since: datetime | None = None
        self.disabled: DeliveriesDisabled | None = None
        self.writes = 0

    async def mark_failing(self, channel_id: str, at: datetime) -> datetime | None:
        self.writes += 1
        self.since = self.since or at
        return self.since

    async def mark_ok(self, channel_id: str) -> None:
        self.writes += 1
        self.since = None

    async def disable(self, channel_id: str, disabled: DeliveriesDisabled) -> bool:
        self.writes += 1
        self.disabled = disabled
        return True


def _channel(**fields: Any) -> Channel:
    now = datetime.now(UTC)
    return Channel.model_validate(
        {
            "_id": "cm_x",
            "name": "x",
            "outgoing_url": "https://example.com/",
            "hmac_secret": "whsec_x",
            "created_at": now,
            "updated_at": now,
            **fields,
        }
    )


async def test_only_changes_are_written_and_zero_never_disables() -> None:
    repo = _Repo()
    health = EndpointHealth(repo, disable_after_hours=0, cache_ttl_s=60)  # type: ignore[arg-type]
    channel = _channel()
    for _ in range(100):
        assert await health.failed(channel, "HTTP_500") is False
    assert repo.writes == 1  # the first failure only
    for _ in range(100):
        await health.succeeded(channel)
    assert repo.writes == 2 and repo.since is None  # the first success only

    long_ago = datetime.now(UTC) - timedelta(days=30)
    assert await health.failed(_channel(endpoint_failing_since=long_ago), "HTTP_500") is False
    assert repo.disabled is None


async def test_a_run_of_failures_longer_than_the_limit_disables() -> None:
    repo = _Repo()
    health = EndpointHealth(repo, disable_after_hours=72, cache_ttl_s=1)  # type: ignore[arg-type]
    recent = datetime.now(UTC) - timedelta(hours=71)
    assert await health.failed(_channel(endpoint_failing_since=recent), "TIMEOUT") is False
    old = datetime.now(UTC) - timedelta(hours=73)
    assert await health.failed(_channel(endpoint_failing_since=old), "TIMEOUT") is True
    assert repo.disabled is not None and repo.disabled.failing_since == old
    assert repo.disabled.last_error_code == "TIMEOUT"
    assert repo.writes == 1  # the disable; the failing time was already recorded
