"""The admin API against the running system: auth, channels, the request log."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from happ_common.signing import happ_signature
from happ_devtools.procs import free_port
from tests.conftest import ADMIN_TOKEN, System, eventually

# --- auth ------------------------------------------------------------------------------


async def _api_routes(system: System) -> list[tuple[str, str]]:
    spec = (await system.http.get(system.url("admin", "/openapi.json"))).json()
    routes = []
    for path, ops in spec["paths"].items():
        for method in ops:
            if path.startswith("/api/") and (method, path) != ("post", "/api/session"):
                filled = re.sub(r"\{[^}]+\}", "cm_doesnotexist0000", path)
                routes.append((method.upper(), filled))
    return routes


async def test_every_api_route_refuses_a_caller_without_credentials(system: System) -> None:
    routes = await _api_routes(system)
    # Every SPEC §5 route is in the OpenAPI document, so none escapes this check.
    assert len(routes) >= 16
    for method, path in routes:
        resp = await system.http.request(method, system.url("admin", path), json={})
        assert resp.status_code == 401, (method, path, resp.text)
        assert resp.json()["error"]["code"] == "UNAUTHORIZED"
        assert resp.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "header",
    ["Bearer wrong-token", "Basic dGVzdDp0ZXN0", f"Token {ADMIN_TOKEN}", "Bearer", ADMIN_TOKEN],
)
async def test_wrong_or_malformed_authorization_is_401(system: System, header: str) -> None:
    resp = await system.http.get(
        system.url("admin", "/api/channels"), headers={"Authorization": header}
    )
    assert resp.status_code == 401
    body = resp.json()
    assert body["error"]["code"] == "UNAUTHORIZED"
    assert body["error"]["message"]


async def test_api_answers_are_never_cached(system: System) -> None:
    resp = await system.admin.get("/api/channels")
    assert resp.status_code == 200
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"


async def test_session_cookie_sign_in_csrf_and_sign_out(system: System) -> None:
    async with httpx.AsyncClient(base_url=system.url("admin"), timeout=15) as ui:
        bad = await ui.post("/api/session", json={"token": "nope"})
        assert bad.status_code == 401
        assert "set-cookie" not in bad.headers

        resp = await ui.post("/api/session", json={"token": ADMIN_TOKEN})
        assert resp.status_code == 200, resp.text
        session = resp.json()
        assert session["via"] == "cookie"
        csrf = session["csrf_token"]
        assert csrf and ADMIN_TOKEN not in resp.text
        cookie = resp.headers["set-cookie"]
        assert cookie.startswith("happ_admin_session=")
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
        assert "Path=/" in cookie
        assert ADMIN_TOKEN not in cookie

        # Reads need only the cookie.
        listed = await ui.get("/api/channels")
        assert listed.status_code == 200
        me = await ui.get("/api/session")
        assert me.json()["csrf_token"] == csrf

        # Writes need the CSRF token too.
        body = {"name": "Via cookie", "outgoing_url": system.endpoint("/cookie")}
        no_csrf = await ui.post("/api/channels", json=body)
        assert no_csrf.status_code == 403
        assert no_csrf.json()["error"]["code"] == "CSRF_TOKEN_INVALID"
        wrong_csrf = await ui.post("/api/channels", json=body, headers={"X-CSRF-Token": "x"})
        assert wrong_csrf.status_code == 403
        created = await ui.post("/api/channels", json=body, headers={"X-CSRF-Token": csrf})
        assert created.status_code == 201, created.text

        # An explicit wrong bearer token is not rescued by a valid cookie.
        mixed = await ui.get("/api/channels", headers={"Authorization": "Bearer wrong"})
        assert mixed.status_code == 401

        no_csrf_logout = await ui.delete("/api/session")
        assert no_csrf_logout.status_code == 403
        out = await ui.delete("/api/session", headers={"X-CSRF-Token": csrf})
        assert out.status_code == 204
        assert 'happ_admin_session=""' in out.headers["set-cookie"]
        old_cookie = {"happ_admin_session": resp.cookies["happ_admin_session"]}

    # The session is over on the server, not just forgotten by the client.
    async with httpx.AsyncClient(
        base_url=system.url("admin"), cookies=old_cookie, timeout=15
    ) as replay:
        after = await replay.get("/api/channels")
        assert after.status_code == 401


async def test_session_endpoint_reports_bearer_callers(system: System) -> None:
    resp = await system.admin.get("/api/session")
    assert resp.status_code == 200
    assert resp.json() == {
        "authenticated": True,
        "via": "bearer",
        "csrf_token": None,
        "expires_at": None,
        "user": {"id": "token", "name": "Admin", "role": "admin", "channels": None},
    }


# --- channels ------------------------------------------------------------------------------


async def test_create_channel_returns_the_spec_shape(system: System) -> None:
    resp = await system.admin.post(
        "/api/channels",
        json={
            "name": "  My Website ",
            "outgoing_url": system.endpoint("/shape"),
            "rate_limit_per_second": 250,
            "assistant": {"system_prompt": "Be brief.", "temperature": 0.3},
        },
    )
    assert resp.status_code == 201, resp.text
    c = resp.json()
    assert set(c) >= {
        "id",
        "name",
        "status",
        "webhook_url",
        "outgoing_url",
        "hmac_secret",
        "require_signature",
        "rate_limit_per_second",
        "assistant",
        "created_at",
        "updated_at",
    }
    assert re.fullmatch(r"cm_[a-z0-9]{12,}", c["id"])
    assert c["name"] == "My Website"
    assert c["status"] == "connected"
    assert c["webhook_url"].endswith(f"/webhook/{c['id']}")
    assert c["hmac_secret"].startswith("whsec_")
    assert c["require_signature"] is False
    assert c["rate_limit_per_second"] == 250
    assert c["assistant"]["system_prompt"] == "Be brief."
    assert c["assistant"]["temperature"] == 0.3
    assert c["assistant"]["max_history"] == 20
    got = await system.admin.get(f"/api/channels/{c['id']}")
    assert got.json() == c


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        (
            {"name": "x", "outgoing_url": "http://example.com/h"},
            "ENDPOINT_NOT_HTTPS",
            "outgoing_url",
        ),
        ({"name": "x", "outgoing_url": "ftp://example.com/h"}, "INVALID_URL", "outgoing_url"),
        ({"name": "", "outgoing_url": "https://localhost/h"}, "INVALID_PAYLOAD", "name"),
        ({"outgoing_url": "https://localhost/h"}, "INVALID_PAYLOAD", "name"),
        (
            {"name": "x", "outgoing_url": "https://localhost/h", "rate_limit_per_second": 0},
            "INVALID_PAYLOAD",
            "rate_limit_per_second",
        ),
        (
            {"name": "x", "outgoing_url": "https://localhost/h", "rate_limit_per_second": 100_001},
            "INVALID_PAYLOAD",
            "rate_limit_per_second",
        ),
        (
            {"name": "x", "outgoing_url": "https://localhost/h", "assistant": {"temperature": 3}},
            "INVALID_PAYLOAD",
            "assistant.temperature",
        ),
        (
            {"name": "x", "outgoing_url": "https://localhost/h", "assistant": {"max_history": -1}},
            "INVALID_PAYLOAD",
            "assistant.max_history",
        ),
        (
            {"name": "x", "outgoing_url": "https://localhost/h", "colour": "red"},
            "INVALID_PAYLOAD",
            "colour",
        ),
    ],
)
async def test_create_channel_validation(
    system: System, body: dict[str, Any], code: str, field: str
) -> None:
    resp = await system.admin.post("/api/channels", json=body)
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["code"] == code
    assert field in [d["field"] for d in error["details"]]


async def test_list_channels_pages_by_cursor(system: System) -> None:
    mine = {(await system.create_channel("/list"))["id"] for _ in range(3)}
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        resp = await system.admin.get("/api/channels", params=params)
        assert resp.status_code == 200
        page = resp.json()
        assert len(page["items"]) <= 2
        seen += [c["id"] for c in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages >= 2
    assert len(seen) == len(set(seen))
    assert mine <= set(seen)
    bad = await system.admin.get("/api/channels", params={"limit": 0})
    assert bad.status_code == 422


@pytest.mark.parametrize("channel_id", ["cm_doesnotexist0000", "not-a-channel-id"])
async def test_unknown_channel_is_404_on_every_channel_route(
    system: System, channel_id: str
) -> None:
    calls = [
        ("GET", f"/api/channels/{channel_id}", None),
        ("PATCH", f"/api/channels/{channel_id}", {"name": "x"}),
        ("POST", f"/api/channels/{channel_id}/disconnect", None),
        ("POST", f"/api/channels/{channel_id}/connect", None),
        ("POST", f"/api/channels/{channel_id}/rotate-secret", None),
        ("POST", f"/api/channels/{channel_id}/test", None),
        ("GET", f"/api/channels/{channel_id}/logs", None),
        ("GET", f"/api/channels/{channel_id}/conversations", None),
        ("GET", f"/api/channels/{channel_id}/conversations/u1/messages", None),
        ("GET", f"/api/channels/{channel_id}/messages/msg_1", None),
        ("POST", f"/api/channels/{channel_id}/messages/rpl_1/resend", None),
    ]
    for method, path, body in calls:
        resp = await system.admin.request(method, path, json=body)
        assert resp.status_code == 404, (method, path, resp.text)
        assert resp.json()["error"]["code"] == "CHANNEL_NOT_FOUND"


async def test_patch_changes_only_what_is_sent(system: System) -> None:
    c = await system.create_channel(
        "/patch", assistant={"system_prompt": "Keep me.", "model": "m-1"}
    )
    resp = await system.admin.patch(
        f"/api/channels/{c['id']}",
        json={"name": "Renamed", "assistant": {"temperature": 1.5, "max_history": 5}},
    )
    assert resp.status_code == 200, resp.text
    p = resp.json()
    assert p["name"] == "Renamed"
    assert p["assistant"]["temperature"] == 1.5
    assert p["assistant"]["max_history"] == 5
    assert p["assistant"]["system_prompt"] == "Keep me."
    assert p["assistant"]["model"] == "m-1"
    assert p["outgoing_url"] == c["outgoing_url"]
    assert p["hmac_secret"] == c["hmac_secret"]
    assert p["updated_at"] > c["updated_at"]

    # null leaves a field alone; model: null means the service's default model.
    resp = await system.admin.patch(
        f"/api/channels/{c['id']}",
        json={
            "name": None,
            "outgoing_url": None,
            "assistant": {"model": None, "fallback_text": None},
        },
    )
    assert resp.status_code == 200, resp.text
    p = resp.json()
    assert p["name"] == "Renamed"
    assert p["outgoing_url"] == c["outgoing_url"]
    assert p["assistant"]["model"] is None
    assert p["assistant"]["fallback_text"] == c["assistant"]["fallback_text"]

    for body, field in [
        ({"assistant": {"temperature": -1}}, "assistant.temperature"),
        ({"assistant": {"fallback_text": ""}}, "assistant.fallback_text"),
        ({"rate_limit_per_second": 0}, "rate_limit_per_second"),
        ({"status": "disconnected"}, "status"),
    ]:
        bad = await system.admin.patch(f"/api/channels/{c['id']}", json=body)
        assert bad.status_code == 422, (body, bad.text)
        assert field in [d["field"] for d in bad.json()["error"]["details"]]
    insecure = await system.admin.patch(
        f"/api/channels/{c['id']}", json={"outgoing_url": "http://example.com/x"}
    )
    assert insecure.status_code == 422
    assert insecure.json()["error"]["code"] == "ENDPOINT_NOT_HTTPS"
    assert (await system.admin.get(f"/api/channels/{c['id']}")).json()["outgoing_url"] == c[
        "outgoing_url"
    ]


async def test_disconnect_keeps_everything_and_connect_restores_it(system: System) -> None:
    c = await system.create_channel("/dc")
    sent = await system.send(c["id"], {"sender_id": "dc-user", "text": "before"})
    assert sent.status_code == 200
    await system.receiver.wait_for("/dc", 1)

    off = (await system.admin.post(f"/api/channels/{c['id']}/disconnect")).json()
    assert off["status"] == "disconnected"
    for key in ("id", "webhook_url", "outgoing_url", "hmac_secret", "assistant"):
        assert off[key] == c[key]

    async def refused() -> bool:
        r = await system.send(c["id"], {"sender_id": "dc-user", "text": "while off"})
        return r.status_code == 403

    await eventually(refused, timeout_s=2.5)
    # Logs and conversations survive a disconnect.
    logs = (await system.admin.get(f"/api/channels/{c['id']}/logs")).json()["items"]
    assert any(e["status_code"] == 200 and e["direction"] == "incoming" for e in logs)
    convs = (await system.admin.get(f"/api/channels/{c['id']}/conversations")).json()["items"]
    assert [x["sender_id"] for x in convs] == ["dc-user"]

    insecure = await system.admin.post(
        f"/api/channels/{c['id']}/connect", json={"outgoing_url": "http://example.com/x"}
    )
    assert insecure.status_code == 422
    assert insecure.json()["error"]["code"] == "ENDPOINT_NOT_HTTPS"

    new_url = system.endpoint("/dc-new")
    on = await system.admin.post(f"/api/channels/{c['id']}/connect", json={"outgoing_url": new_url})
    assert on.status_code == 200
    back = on.json()
    assert back["status"] == "connected"
    assert back["outgoing_url"] == new_url
    assert back["hmac_secret"] == c["hmac_secret"]
    assert back["webhook_url"] == c["webhook_url"]

    async def accepted() -> bool:
        r = await system.send(c["id"], {"sender_id": "dc-user", "text": "after"})
        return r.status_code == 200

    await eventually(accepted, timeout_s=2.5)
    await system.receiver.wait_for("/dc-new", 1)
    # No body keeps the URL.
    again = await system.admin.post(f"/api/channels/{c['id']}/connect")
    assert again.status_code == 200
    assert again.json()["outgoing_url"] == new_url


async def test_rotate_secret_keeps_the_previous_one_for_24_hours(system: System) -> None:
    c = await system.create_channel("/rotate", require_signature=True)
    resp = await system.admin.post(f"/api/channels/{c['id']}/rotate-secret")
    assert resp.status_code == 200
    r = resp.json()
    assert r["hmac_secret"] != c["hmac_secret"]
    assert r["hmac_secret"].startswith("whsec_")
    expires = datetime.fromisoformat(r["previous_secret_expires_at"])
    assert timedelta(hours=23.9) < expires - datetime.now(UTC) <= timedelta(hours=24)

    url = system.url("ingress", f"/webhook/{c['id']}")

    async def accepted_with(secret: str) -> bool:
        body = b'{"sender_id": "rot", "text": "hi"}'
        resp = await system.http.post(
            url,
            content=body,
            headers={
                "Content-Type": "application/json",
                "X-HAPP-Signature": happ_signature(secret, body),
            },
        )
        return resp.status_code == 200

    await eventually(lambda: accepted_with(r["hmac_secret"]), timeout_s=2.5)
    assert await accepted_with(c["hmac_secret"])
    assert not await accepted_with("whsec_bm90IHRoZSBzZWNyZXQ=")


# --- request log ----------------------------------------------------------------------------


async def _logs(system: System, channel_id: str, **params: Any) -> dict[str, Any]:
    resp = await system.admin.get(f"/api/channels/{channel_id}/logs", params=params)
    assert resp.status_code == 200, resp.text
    page: dict[str, Any] = resp.json()
    return page


async def _wait_for_logs(system: System, channel_id: str, count: int) -> list[dict[str, Any]]:
    async def enough() -> bool:
        return len((await _logs(system, channel_id, limit=200))["items"]) >= count

    await eventually(enough)
    items: list[dict[str, Any]] = (await _logs(system, channel_id, limit=200))["items"]
    return items


async def test_request_log_filters_by_direction_status_and_time(system: System) -> None:
    c = await system.create_channel("/logs")
    started = datetime.now(UTC)
    ok = await system.send(c["id"], {"sender_id": "log-user", "text": "hello log"})
    assert ok.status_code == 200
    bad = await system.send(c["id"], {"text": "no sender"})
    assert bad.status_code == 422
    await system.receiver.wait_for("/logs", 1)
    items = await _wait_for_logs(system, c["id"], 3)

    assert [e["created_at"] for e in items] == sorted(
        (e["created_at"] for e in items), reverse=True
    )
    entry = next(e for e in items if e["direction"] == "incoming" and e["status_code"] == 200)
    assert set(entry) == {
        "id",
        "channel_id",
        "direction",
        "created_at",
        "method",
        "url",
        "status_code",
        "error_code",
        "duration_ms",
        "request_body",
        "response_body",
        "message_id",
        "attempt",
        "outgoing_headers",  # null: only outgoing attempts of channels with headers have them
    }
    assert entry["outgoing_headers"] is None
    assert entry["message_id"] == ok.json()["message_id"]
    assert entry["url"] == f"/webhook/{c['id']}"
    assert '"hello log"' in entry["request_body"]

    incoming = (await _logs(system, c["id"], direction="incoming"))["items"]
    assert {e["status_code"] for e in incoming} == {200, 422}
    outgoing = (await _logs(system, c["id"], direction="outgoing"))["items"]
    assert len(outgoing) == 1
    assert outgoing[0]["attempt"] == 1
    assert outgoing[0]["message_id"].startswith("rpl_")

    two = (await _logs(system, c["id"], status="2xx"))["items"]
    assert len(two) == 2
    assert all(200 <= e["status_code"] < 300 for e in two)
    four = (await _logs(system, c["id"], status="4xx"))["items"]
    assert [(e["status_code"], e["error_code"]) for e in four] == [(422, "INVALID_PAYLOAD")]
    assert (await _logs(system, c["id"], status="422"))["items"] == four
    assert (await _logs(system, c["id"], status="5xx"))["items"] == []
    both = (await _logs(system, c["id"], status="4xx,2xx"))["items"]
    assert len(both) == 3

    window = (await _logs(system, c["id"], since=started.isoformat()))["items"]
    assert len(window) == 3
    later = (
        await _logs(system, c["id"], since=(datetime.now(UTC) + timedelta(minutes=1)).isoformat())
    )["items"]
    assert later == []
    earlier = (await _logs(system, c["id"], until=started.isoformat()))["items"]
    assert earlier == []

    by_message = (await _logs(system, c["id"], message_id=outgoing[0]["message_id"]))["items"]
    assert [e["id"] for e in by_message] == [outgoing[0]["id"]]

    # Signatures and secrets never enter the log.
    text = str(items)
    assert c["hmac_secret"] not in text
    assert "sha256=" not in text


async def test_failures_without_a_status_code_are_findable(system: System) -> None:
    closed = free_port()
    c = await system.create_channel("/unused")
    await system.admin.patch(
        f"/api/channels/{c['id']}", json={"outgoing_url": f"https://localhost:{closed}/down"}
    )
    system.receiver.behaviour["/err-500"] = (500, 0.0)
    result = (await system.admin.post(f"/api/channels/{c['id']}/test")).json()
    assert result["error_code"] == "ENDPOINT_UNREACHABLE"
    await system.admin.patch(
        f"/api/channels/{c['id']}", json={"outgoing_url": system.endpoint("/err-500")}
    )
    result = (await system.admin.post(f"/api/channels/{c['id']}/test")).json()
    assert result["error_code"] == "HTTP_500"
    await _wait_for_logs(system, c["id"], 2)

    errors = (await _logs(system, c["id"], status="error"))["items"]
    assert [(e["status_code"], e["error_code"]) for e in errors] == [(None, "ENDPOINT_UNREACHABLE")]
    failed = (await _logs(system, c["id"], status="failed"))["items"]
    assert [e["error_code"] for e in failed] == ["HTTP_500", "ENDPOINT_UNREACHABLE"]
    five = (await _logs(system, c["id"], status="5xx"))["items"]
    assert [e["error_code"] for e in five] == ["HTTP_500"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"status": "6xx"}, "status"),
        ({"status": "ok?"}, "status"),
        ({"direction": "sideways"}, "direction"),
        ({"since": "yesterday"}, "since"),
        ({"limit": 0}, "limit"),
        ({"limit": 201}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
    ],
)
async def test_request_log_rejects_bad_queries(
    system: System, params: dict[str, Any], field: str
) -> None:
    c = await system.create_channel("/badq")
    resp = await system.admin.get(f"/api/channels/{c['id']}/logs", params=params)
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["code"] == "INVALID_PAYLOAD"
    assert f"query.{field}" in [d["field"] for d in error["details"]]


async def test_request_log_pagination_is_stable_under_inserts(system: System) -> None:
    c = await system.create_channel("/pages")
    for i in range(7):
        resp = await system.send(c["id"], {"text": f"bad {i}"})  # 422s: incoming only
        assert resp.status_code == 422
    before = await _wait_for_logs(system, c["id"], 7)
    assert len(before) == 7

    first = await _logs(system, c["id"], limit=3)
    assert [e["id"] for e in first["items"]] == [e["id"] for e in before[:3]]
    assert first["next_cursor"]
    # New entries arrive between pages: they sort above the cursor.
    for i in range(2):
        await system.send(c["id"], {"text": f"new {i}"})
    await _wait_for_logs(system, c["id"], 9)

    seen = [e["id"] for e in first["items"]]
    cursor = first["next_cursor"]
    while cursor:
        page = await _logs(system, c["id"], limit=3, cursor=cursor)
        seen += [e["id"] for e in page["items"]]
        cursor = page["next_cursor"]
    assert seen == [e["id"] for e in before]


async def test_get_one_log_entry(system: System) -> None:
    c = await system.create_channel("/one")
    await system.send(c["id"], {"text": "x"})
    (entry,) = await _wait_for_logs(system, c["id"], 1)
    resp = await system.admin.get(f"/api/logs/{entry['id']}")
    assert resp.status_code == 200
    assert resp.json() == entry
    missing = await system.admin.get("/api/logs/log_doesnotexist")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "LOG_NOT_FOUND"


async def test_openapi_documents_request_and_response_models(system: System) -> None:
    spec = (await system.http.get(system.url("admin", "/openapi.json"))).json()
    schemas = spec["components"]["schemas"]
    for name in (
        "ChannelCreate",
        "ChannelUpdate",
        "ChannelOut",
        "LogPage",
        "LogEntryOut",
        "ConversationPage",
        "MessagePage",
        "MessageStatusOut",
        "SendTestResult",
    ):
        assert name in schemas, name
    # Error bodies are generated per status from the error kinds (happ_admin.errors).
    assert "CHANNEL_NOT_FOUND" in schemas["Error404Info"]["properties"]["code"]["enum"]
    logs = spec["paths"]["/api/channels/{channel_id}/logs"]["get"]
    assert {p["name"] for p in logs["parameters"]} >= {
        "direction",
        "status",
        "since",
        "until",
        "limit",
        "cursor",
    }
    assert logs["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/LogPage"
    )
    assert {"token", "session"} <= set(spec["components"]["securitySchemes"])
