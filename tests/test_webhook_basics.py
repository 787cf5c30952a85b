"""The webhook's main refusals, each with its SPEC status and code."""

from __future__ import annotations

from happ_common.signing import happ_signature
from tests.conftest import System, eventually


async def test_unknown_channel_is_404(system: System) -> None:
    resp = await system.send("cm_doesnotexist0000", {"sender_id": "u", "text": "hi"})
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "CHANNEL_NOT_FOUND"


async def test_missing_sender_id_is_422_with_field_details(system: System) -> None:
    channel = await system.create_channel("/basics")
    resp = await system.send(channel["id"], {"text": "hi"})
    assert resp.status_code == 422
    error = resp.json()["error"]
    assert error["code"] == "INVALID_PAYLOAD"
    assert {"field": "sender_id", "problem": "Field required"} in error["details"]


async def test_not_json_is_422(system: System) -> None:
    channel = await system.create_channel("/basics")
    resp = await system.http.post(
        system.url("ingress", f"/webhook/{channel['id']}"),
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert resp.status_code == 422
    assert resp.json()["error"]["code"] == "INVALID_PAYLOAD"


async def test_signature_is_checked_when_present_and_required_when_configured(
    system: System,
) -> None:
    channel = await system.create_channel("/signed", require_signature=True)
    body = b'{"sender_id": "u1", "text": "signed hello"}'
    url = system.url("ingress", f"/cm/{channel['id']}")
    headers = {"Content-Type": "application/json"}

    unsigned = await system.http.post(url, content=body, headers=headers)
    assert unsigned.status_code == 401
    assert unsigned.json()["error"]["code"] == "HMAC_REQUIRED"

    wrong = await system.http.post(
        url, content=body, headers={**headers, "X-HAPP-Signature": happ_signature("whsec_x", body)}
    )
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "HMAC_MISMATCH"

    good = await system.http.post(
        url,
        content=body,
        headers={**headers, "X-HAPP-Signature": happ_signature(channel["hmac_secret"], body)},
    )
    assert good.status_code == 200, good.text


async def test_disconnected_channel_refuses_and_reconnected_accepts(system: System) -> None:
    channel = await system.create_channel("/toggle")
    resp = await system.admin.post(f"/api/channels/{channel['id']}/disconnect")
    assert resp.status_code == 200
    assert resp.json()["status"] == "disconnected"

    async def refused() -> bool:
        r = await system.send(channel["id"], {"sender_id": "u", "text": "hi"})
        return r.status_code == 403 and r.json()["error"]["code"] == "CHANNEL_DISCONNECTED"

    await eventually(refused, timeout_s=2.5)
    resp = await system.admin.post(f"/api/channels/{channel['id']}/connect")
    assert resp.json()["status"] == "connected"
    assert resp.json()["hmac_secret"] == channel["hmac_secret"]

    async def accepted() -> bool:
        r = await system.send(channel["id"], {"sender_id": "u", "text": "back"})
        return r.status_code == 200

    await eventually(accepted, timeout_s=2.5)


async def test_admin_api_requires_the_bearer_token(system: System) -> None:
    resp = await system.http.get(system.url("admin", "/api/channels"))
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "UNAUTHORIZED"
    resp = await system.http.get(
        system.url("admin", "/api/channels"), headers={"Authorization": "Bearer nope"}
    )
    assert resp.status_code == 401


async def test_http_outgoing_url_is_refused(system: System) -> None:
    resp = await system.admin.post(
        "/api/channels", json={"name": "x", "outgoing_url": "http://example.com/hook"}
    )
    assert resp.status_code == 422
    assert resp.json()["error"]["code"] == "ENDPOINT_NOT_HTTPS"
