"""Admin behaviour that depends on configuration: an admin app started in this
process with its own settings, on the system's real broker and database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from happ_admin.app import create_app
from happ_admin.settings import AdminSettings
from happ_common.settings import HappSettings
from tests.conftest import ADMIN_TOKEN, System


@asynccontextmanager
async def admin_app(
    system: System,
    *,
    tokens: str,
    allow_private: bool = True,
    base_url: str = "http://admin.test",
    cookie_secure: bool | None = None,
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        AdminSettings(token=tokens, cookie_secure=cookie_secure),
        system.stack.infra(),
        HappSettings(allow_private_endpoints=allow_private),
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url) as client,
    ):
        yield client


async def test_several_tokens_are_accepted(system: System) -> None:
    async with admin_app(system, tokens="token-one, token-two") as client:
        for token in ("token-one", "token-two"):
            resp = await client.get("/api/channels", headers={"Authorization": f"Bearer {token}"})
            assert resp.status_code == 200, token
        for token in ("token-three", "token-one, token-two", ADMIN_TOKEN):
            resp = await client.get("/api/channels", headers={"Authorization": f"Bearer {token}"})
            assert resp.status_code == 401, token


async def test_removing_a_token_ends_the_sessions_opened_with_it(system: System) -> None:
    async with admin_app(system, tokens="keep-me,retire-me") as before:
        resp = await before.post("/api/session", json={"token": "retire-me"})
        assert resp.status_code == 200
        cookie = resp.cookies["happ_admin_session"]
        kept = await before.post("/api/session", json={"token": "keep-me"})
        kept_cookie = kept.cookies["happ_admin_session"]
        before.cookies.clear()
        before.cookies.set("happ_admin_session", cookie)
        assert (await before.get("/api/channels")).status_code == 200
    # Sessions are in MongoDB: another replica, configured without the token, refuses it.
    async with admin_app(system, tokens="keep-me") as after:
        after.cookies.set("happ_admin_session", cookie)
        assert (await after.get("/api/channels")).status_code == 401
        after.cookies.set("happ_admin_session", kept_cookie)
        assert (await after.get("/api/channels")).status_code == 200


@pytest.mark.parametrize(
    ("base_url", "configured", "secure"),
    [
        ("http://admin.test", None, False),
        ("https://admin.test", None, True),
        ("http://admin.test", True, True),
    ],
)
async def test_session_cookie_is_secure_over_https(
    system: System, base_url: str, configured: bool | None, secure: bool
) -> None:
    async with admin_app(
        system, tokens="cookie-token", base_url=base_url, cookie_secure=configured
    ) as client:
        resp = await client.post("/api/session", json={"token": "cookie-token"})
        assert resp.status_code == 200
        assert ("; Secure" in resp.headers["set-cookie"]) is secure
        assert "HttpOnly" in resp.headers["set-cookie"]


async def test_private_outgoing_urls_are_refused_unless_allowed(system: System) -> None:
    async with admin_app(system, tokens="t", allow_private=False) as client:
        auth = {"Authorization": "Bearer t"}
        for url in ("https://127.0.0.1/hook", "https://localhost/hook", "https://10.1.2.3/x"):
            resp = await client.post(
                "/api/channels", json={"name": "p", "outgoing_url": url}, headers=auth
            )
            assert resp.status_code == 422, url
            error = resp.json()["error"]
            assert error["code"] == "ENDPOINT_PRIVATE_ADDRESS"
            assert error["details"][0]["field"] == "outgoing_url"
        channel = await system.create_channel("/private")
        patch = await client.patch(
            f"/api/channels/{channel['id']}",
            json={"outgoing_url": "https://127.0.0.1/x"},
            headers=auth,
        )
        assert patch.status_code == 422
        assert patch.json()["error"]["code"] == "ENDPOINT_PRIVATE_ADDRESS"
        # The same rule at send time: a test to a loopback endpoint is not made.
        test = await client.post(f"/api/channels/{channel['id']}/test", headers=auth)
        assert test.status_code == 200
        assert test.json()["ok"] is False
        assert test.json()["error_code"] == "ENDPOINT_UNREACHABLE"
        assert system.receiver.on_path("/private") == []


def test_admin_refuses_to_start_without_a_token() -> None:
    with pytest.raises(SystemExit, match="HAPP_ADMIN_TOKEN"):
        create_app(AdminSettings(token=" , "))


def test_send_test_reads_the_delivery_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HAPP_DELIVERY_CA_FILE", "/etc/happ/ca.pem")
    monkeypatch.setenv("HAPP_DELIVERY_TIMEOUT_S", "4.5")
    settings = AdminSettings()
    assert settings.delivery_ca_file == "/etc/happ/ca.pem"
    assert settings.delivery_timeout_s == 4.5
