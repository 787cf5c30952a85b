"""A channel's own outgoing headers (issue #13), across the real services, broker
and database: sent on every POST to the endpoint, write-only through the admin
API, masked in the request log, and refused with a 422 naming the header when
they are malformed or would replace one of HAPP's."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from happ_common.custom_headers import MASK
from happ_devtools.receiver import signature_ok
from tests.conftest import System, eventually

GATEWAY_TOKEN = "Bearer gw-7f3a9c-secret"


def unique_path() -> str:
    return "/hdr-" + uuid.uuid4().hex[:10]


async def outgoing_log(system: System, channel_id: str, count: int) -> list[dict[str, Any]]:
    """The channel's outgoing request-log entries, as the admin API shows them."""
    found: list[dict[str, Any]] = []

    async def logged() -> bool:
        resp = await system.admin.get(
            f"/api/channels/{channel_id}/logs", params={"direction": "outgoing"}
        )
        found[:] = resp.json()["items"]
        return len(found) >= count

    await eventually(logged, timeout_s=20)
    return found


async def test_headers_are_sent_on_every_delivery_and_masked_everywhere(system: System) -> None:
    path = unique_path()
    created = await system.create_channel(
        path, outgoing_headers={"Authorization": GATEWAY_TOKEN, "X-Gateway-Route": "eu-1"}
    )
    masked = {"Authorization": MASK, "X-Gateway-Route": MASK}
    assert created["outgoing_headers"] == masked
    got = (await system.admin.get(f"/api/channels/{created['id']}")).json()
    assert got["outgoing_headers"] == masked
    listed = (await system.admin.get("/api/channels", params={"limit": 200})).json()["items"]
    assert [c["outgoing_headers"] for c in listed if c["id"] == created["id"]] == [masked]

    sent = await system.send(created["id"], {"sender_id": "u1", "text": "hello"})
    assert sent.status_code == 200
    (received,) = await system.receiver.wait_for(path, 1)
    assert received.headers["Authorization"] == GATEWAY_TOKEN
    assert received.headers["X-Gateway-Route"] == "eu-1"
    # HAPP's own headers are all there, the signature over the body intact.
    assert received.headers["Content-Type"] == "application/json"
    assert received.headers["X-HAPP-Attempt"] == "1"
    assert received.headers["webhook-id"] == received.json()["message_id"]
    assert signature_ok(received, created["hmac_secret"])

    # Send test goes through the same code: the headers are on it too.
    test = (await system.admin.post(f"/api/channels/{created['id']}/test")).json()
    assert test["ok"], test
    probe = system.receiver.on_path(path)[-1]
    assert probe.json().get("test") is True
    assert probe.headers["Authorization"] == GATEWAY_TOKEN

    entries = await outgoing_log(system, created["id"], 2)
    assert all(e["outgoing_headers"] == masked for e in entries)
    one = (await system.admin.get(f"/api/logs/{entries[0]['id']}")).json()
    assert one["outgoing_headers"] == masked
    status = (
        await system.admin.get(
            f"/api/channels/{created['id']}/messages/{sent.json()['message_id']}"
        )
    ).json()
    assert [a["outgoing_headers"] for a in status["attempts"]] == [masked]
    # The value is nowhere in what the request log stored, the first attempt's
    # entry (kept with the reply's delivery state) included.
    stored = await system.db.request_log.find({"channel_id": created["id"]}).to_list(None)
    states = await system.db.deliveries.find({"channel_id": created["id"]}).to_list(None)
    assert stored and any(s.get("first_attempt") for s in states)
    assert "gw-7f3a9c" not in json.dumps([stored, states], default=str)
    # Incoming entries carry no such field.
    assert all("outgoing_headers" not in e for e in stored if e["direction"] == "incoming")


async def test_patch_sets_replaces_and_removes_by_name(system: System) -> None:
    path = unique_path()
    channel = await system.create_channel(
        path, outgoing_headers={"Authorization": GATEWAY_TOKEN, "X-Old": "1", "X-Keep": "k"}
    )
    resp = await system.admin.patch(
        f"/api/channels/{channel['id']}",
        json={
            # Any case names the same header; the new spelling wins.
            "outgoing_headers": {"authorization": "Bearer rotated", "x-old": None, "X-New": "n"}
        },
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["outgoing_headers"] == {"X-Keep": MASK, "authorization": MASK, "X-New": MASK}
    # Other changes leave the headers alone.
    resp = await system.admin.patch(f"/api/channels/{channel['id']}", json={"name": "Renamed"})
    assert set(resp.json()["outgoing_headers"]) == {"X-Keep", "authorization", "X-New"}
    resp = await system.admin.patch(
        f"/api/channels/{channel['id']}", json={"outgoing_headers": None}
    )
    assert set(resp.json()["outgoing_headers"]) == {"X-Keep", "authorization", "X-New"}

    await system.send(channel["id"], {"sender_id": "u2", "text": "after the patch"})
    (received,) = await system.receiver.wait_for(path, 1)
    assert received.headers["Authorization"] == "Bearer rotated"
    assert received.headers["X-Keep"] == "k"
    assert received.headers["X-New"] == "n"
    assert "X-Old" not in received.headers

    resp = await system.admin.patch(
        f"/api/channels/{channel['id']}",
        json={"outgoing_headers": {"X-Keep": None, "Authorization": None, "X-New": None}},
    )
    assert resp.json()["outgoing_headers"] == {}
    stored = await system.db.channels.find_one({"_id": channel["id"]})
    assert stored is not None and stored["outgoing_headers"] == {}


RESERVED = [
    "Content-Type",
    "content-length",
    "Host",
    "X-HAPP-Signature",
    "x-happ-anything",
    "webhook-signature",
    "Webhook-Id",
    "webhook-timestamp",
    "traceparent",
    "User-Agent",
]


@pytest.mark.parametrize("name", RESERVED)
async def test_happs_own_headers_cannot_be_overridden(system: System, name: str) -> None:
    resp = await system.admin.post(
        "/api/channels",
        json={
            "name": "reserved",
            "outgoing_url": system.endpoint("/never"),
            "outgoing_headers": {name: "x", "X-Fine": "ok"},
        },
    )
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["code"] == "INVALID_PAYLOAD"
    assert name in error["message"]
    assert [d["field"] for d in error["details"]] == [f"outgoing_headers.{name}"]
    assert "cannot be overridden" in error["details"][0]["problem"]


BAD = {
    "a space in the name": ({"X Bad": "v"}, "X Bad", "not a valid header name"),
    "a colon in the name": ({"X-A:B": "v"}, "X-A:B", "not a valid header name"),
    "an empty name": ({"": "v"}, "", "not a valid header name"),
    "CR LF in the value": ({"X-Inject": "v\r\nX-Evil: 1"}, "X-Inject", "printable"),
    "LF in the value": ({"X-Inject": "v\nX"}, "X-Inject", "printable"),
    "a trailing LF in the value": ({"X-Inject": "abc\n"}, "X-Inject", "printable"),
    "a trailing LF in the name": ({"X-Key\n": "v"}, "X-Key\n", "not a valid header name"),
    "a control character": ({"X-Ctl": "a\x00b"}, "X-Ctl", "printable"),
    "non-ASCII": ({"X-Utf": "café"}, "X-Utf", "printable"),
    "an empty value": ({"X-Empty": ""}, "X-Empty", "printable"),
    "a too long value": ({"X-Long": "v" * 4097}, "X-Long", "printable"),
    "the mask sent back": ({"Authorization": MASK}, "Authorization", "masked value"),
    "one name twice": ({"X-Dup": "1", "x-dup": "2"}, "x-dup", "same header"),
}


@pytest.mark.parametrize("case", list(BAD))
async def test_malformed_headers_are_refused_on_create_and_patch(system: System, case: str) -> None:
    headers, field, problem = BAD[case]
    created = await system.admin.post(
        "/api/channels",
        json={
            "name": "bad",
            "outgoing_url": system.endpoint("/never"),
            "outgoing_headers": headers,
        },
    )
    assert created.status_code == 422, created.text
    details = created.json()["error"]["details"]
    assert [d["field"] for d in details] == [f"outgoing_headers.{field}".rstrip(".")], details
    assert problem in details[0]["problem"]

    channel = await system.create_channel("/never", outgoing_headers={"X-Before": "kept"})
    patched = await system.admin.patch(
        f"/api/channels/{channel['id']}", json={"outgoing_headers": headers}
    )
    assert patched.status_code == 422, patched.text
    assert problem in patched.json()["error"]["details"][0]["problem"]
    stored = await system.db.channels.find_one({"_id": channel["id"]})
    assert stored is not None and stored["outgoing_headers"] == {"X-Before": "kept"}


async def test_count_and_size_are_bounded(system: System) -> None:
    many = {f"X-H{i}": "v" for i in range(21)}
    resp = await system.admin.post(
        "/api/channels",
        json={"name": "many", "outgoing_url": system.endpoint("/never"), "outgoing_headers": many},
    )
    assert resp.status_code == 422
    assert resp.json()["error"]["details"] == [
        {"field": "outgoing_headers", "problem": "at most 20 headers"}
    ]
    # Adding one by PATCH counts the ones already there.
    channel = await system.create_channel(
        "/never", outgoing_headers={f"X-H{i}": "v" for i in range(20)}
    )
    resp = await system.admin.patch(
        f"/api/channels/{channel['id']}", json={"outgoing_headers": {"X-One-More": "v"}}
    )
    assert resp.status_code == 422
    swap = {"X-H0": None, "X-One-More": "v"}
    resp = await system.admin.patch(
        f"/api/channels/{channel['id']}", json={"outgoing_headers": swap}
    )
    assert resp.status_code == 200, resp.text
