"""The web UI in a real headless Chromium (Debian's ``chromium``, driven by Playwright).

Each test does what an operator does — sign in, create a channel, send a test,
disconnect and reconnect, read the request log and conversations — and checks
the result both on screen and through the API. The screenshots they take are
the ones docs/admin.md shows (``HAPP_UPDATE_SCREENSHOTS=1`` refreshes them).
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.conftest import ADMIN_TOKEN, System, eventually

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parent.parent
# Every run keeps its screenshots with the other test artifacts; the ones
# docs/admin.md shows are refreshed on purpose (HAPP_UPDATE_SCREENSHOTS=1, best
# with only this file running, so other tests' channels stay out of the
# pictures) rather than rewritten, pixel-different, by every test run.
SCREENSHOT_DIRS = [ROOT / "test-artifacts" / "screenshots"]
if os.environ.get("HAPP_UPDATE_SCREENSHOTS") == "1":
    SCREENSHOT_DIRS.append(ROOT / "docs" / "screenshots")


@pytest_asyncio.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest_asyncio.fixture
async def page(browser: Browser, system: System) -> AsyncIterator[Page]:
    context = await browser.new_context(
        viewport={"width": 1440, "height": 900},
        base_url=system.url("admin"),
        locale="en-GB",
        timezone_id="UTC",
    )
    await context.grant_permissions(["clipboard-read", "clipboard-write"])
    p = await context.new_page()
    p.set_default_timeout(15_000)
    try:
        yield p
    finally:
        await context.close()


async def shot(page: Page, name: str) -> None:
    # Let transitions settle, and drop toasts, which would cover the content.
    await page.wait_for_timeout(250)
    await page.evaluate("document.getElementById('toasts').replaceChildren()")
    png = await page.screenshot()
    assert png.startswith(b"\x89PNG")
    for folder in SCREENSHOT_DIRS:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.png").write_bytes(png)


async def sign_in(page: Page) -> None:
    await page.goto("/")
    await page.click("[data-test=use-token]")
    await page.fill("[data-test=token]", ADMIN_TOKEN)
    await page.click("button[type=submit]")
    await expect(page.locator("h1", has_text="Custom Messenger")).to_be_visible()


async def open_channel(page: Page, channel_id: str, tab: str = "webhook") -> None:
    await page.goto(f"/#/channels/{channel_id}/{tab}")
    await expect(page.locator("[data-test=channel-name]")).to_be_visible()


async def api(system: System, path: str) -> dict[str, Any]:
    resp = await system.admin.get(path)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def test_sign_in_keeps_the_token_out_of_the_page_and_sign_out_ends_the_session(
    page: Page, system: System
) -> None:
    await page.goto("/")
    await expect(page.locator("h1", has_text="Sign in")).to_be_visible()
    await expect(page.locator("[data-test=username]")).to_be_visible()
    await shot(page, "sign-in")

    await page.click("[data-test=use-token]")
    await page.fill("[data-test=token]", "not-the-token")
    await page.click("button[type=submit]")
    await expect(page.locator(".form-error")).to_have_text("That token is not valid.")

    await page.fill("[data-test=token]", ADMIN_TOKEN)
    await page.click("button[type=submit]")
    await expect(page.locator("h1", has_text="Custom Messenger")).to_be_visible()

    assert ADMIN_TOKEN not in page.url
    assert ADMIN_TOKEN not in await page.content()
    storage = await page.evaluate(
        "JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage)])"
    )
    assert ADMIN_TOKEN not in storage
    # HttpOnly: the script cannot read the session.
    assert await page.evaluate("document.cookie") == ""
    (cookie,) = [c for c in await page.context.cookies() if c["name"] == "happ_admin_session"]
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert ADMIN_TOKEN not in cookie["value"]
    assert (await page.request.get("/api/channels")).status == 200

    await page.click("[data-test=sign-out]")
    await expect(page.locator("h1", has_text="Sign in")).to_be_visible()
    await page.context.add_cookies(
        [{"name": "happ_admin_session", "value": cookie["value"], "url": system.url("admin")}]
    )
    assert (await page.request.get("/api/channels")).status == 401


async def test_create_channel_send_test_and_read_the_request_log(
    page: Page, system: System
) -> None:
    await sign_in(page)
    await page.click("[data-test=new-channel]")
    await page.fill("#f-name", "My Website")
    await page.fill("#f-outgoing_url", system.endpoint("/ui-site"))
    await page.fill("#f-assistant-system_prompt", "You are the support assistant of My Website.")
    await shot(page, "new-channel")
    await page.click("[data-test=create]")

    await expect(page.locator("[data-test=channel-name]")).to_have_text("My Website")
    channel_id = page.url.split("/channels/")[1].split("/")[0]
    channel = await api(system, f"/api/channels/{channel_id}")
    assert channel["assistant"]["system_prompt"] == "You are the support assistant of My Website."
    await expect(page.locator("[data-test=webhook-url]")).to_have_text(channel["webhook_url"])
    secret = page.locator("[data-test=secret]")
    await expect(secret).not_to_contain_text("whsec_" + channel["hmac_secret"][6:12])
    assert channel["hmac_secret"] not in await page.content()
    await shot(page, "channel-webhook")

    await page.locator(".copy-field").first.locator("[data-test=copy]").click()
    assert await page.evaluate("navigator.clipboard.readText()") == channel["webhook_url"]
    await page.click("[data-test=reveal]")
    await expect(secret).to_have_text(channel["hmac_secret"])
    await page.click("[data-test=reveal]")
    await expect(secret).not_to_have_text(channel["hmac_secret"])

    await page.click("[data-test=send-test]")
    result = page.locator("[data-test=test-result]")
    await expect(result).to_have_attribute("data-ok", "true")
    await expect(result).to_contain_text("Test delivered · 200 OK")
    (got,) = system.receiver.on_path("/ui-site")
    assert got.json()["test"] is True
    await shot(page, "send-test")

    # A real conversation, then its requests in the log.
    sent = await system.send(
        channel_id,
        {
            "sender_id": "user_42",
            "sender_name": "Dmytro",
            "text": "Hello!",
            "metadata": {"source": "website"},
        },
    )
    assert sent.status_code == 200
    await system.receiver.wait_for("/ui-site", 2)
    await page.click("[data-tab=log]")
    rows = page.locator(".log-row")
    # No click: the list refreshes by itself until the reply's attempt shows up.
    await expect(rows).to_have_count(3, timeout=15_000)
    await expect(rows.first).to_have_attribute("data-direction", "outgoing")

    incoming = page.locator(".log-row[data-direction=incoming]")
    await incoming.click()
    detail = page.locator("[data-test=log-detail]")
    await expect(detail.locator("[data-test=detail-status]")).to_have_text("200 OK")
    await expect(detail.locator("pre.json").first).to_contain_text('"sender_id": "user_42"')
    await expect(detail.locator("pre.json").first).to_contain_text('"source": "website"')
    await expect(detail.locator(".badge[data-status=delivered]")).to_be_visible()
    assert "/log/log_" in page.url
    await shot(page, "request-detail")

    await page.locator(".log-row[data-direction=outgoing]").first.click()
    await expect(detail.locator("[data-test=detail-attempt]")).to_have_text("1")
    await expect(detail.locator("[data-test=detail-time]")).to_contain_text("ms")
    outgoing_payload = await detail.locator("pre.json").first.inner_text()
    assert json.loads(outgoing_payload)["channel"] == "custom_messenger"

    await page.locator(".segmented button", has_text="Outgoing").click()
    await expect(page.locator(".log-row[data-direction=incoming]")).to_have_count(0)
    await expect(page.locator(".log-row[data-direction=outgoing]")).to_have_count(2)
    await page.select_option("[data-test=status-filter]", "5xx")
    await expect(page.locator(".log-row")).to_have_count(0)
    await expect(page.locator(".log-list")).to_contain_text("No requests match these filters.")


async def test_disconnect_and_reconnect_with_confirmation(page: Page, system: System) -> None:
    channel = await system.create_channel("/ui-toggle", name="Mobile App")
    await sign_in(page)
    await open_channel(page, channel["id"])

    await page.click("[data-test=disconnect]")
    dialog = page.locator("dialog")
    await expect(dialog).to_be_visible()
    await expect(dialog).to_contain_text("The request log and conversations are preserved.")
    await shot(page, "disconnect-dialog")
    await dialog.locator("button", has_text="Cancel").click()
    await expect(dialog).to_be_hidden()
    assert (await api(system, f"/api/channels/{channel['id']}"))["status"] == "connected"

    await page.click("[data-test=disconnect]")
    await page.click("[data-test=confirm-disconnect]")
    await expect(page.locator(".channel-head .badge")).to_have_text("Disconnected")
    assert (await api(system, f"/api/channels/{channel['id']}"))["status"] == "disconnected"

    async def refused() -> bool:
        r = await system.send(channel["id"], {"sender_id": "u", "text": "hi"})
        return r.status_code == 403

    await eventually(refused, timeout_s=2.5)

    await page.click("[data-test=connect]")
    await expect(dialog.locator("#connect-url")).to_have_value(channel["outgoing_url"])
    await page.click("[data-test=confirm-connect]")
    await expect(page.locator(".channel-head .badge")).to_have_text("Connected")
    back = await api(system, f"/api/channels/{channel['id']}")
    assert back["status"] == "connected"
    assert back["hmac_secret"] == channel["hmac_secret"]
    assert back["webhook_url"] == channel["webhook_url"]


async def test_failed_test_is_explained(page: Page, system: System) -> None:
    system.receiver.behaviour["/ui-broken"] = (500, 0.0)
    channel = await system.create_channel("/ui-broken", name="Support CRM")
    await sign_in(page)
    await open_channel(page, channel["id"])
    await page.click("[data-test=send-test]")
    result = page.locator("[data-test=test-result]")
    await expect(result).to_have_attribute("data-ok", "false")
    await expect(result).to_contain_text("Test failed · HTTP_500")
    await result.locator("a", has_text="View request").click()
    detail = page.locator("[data-test=log-detail]")
    await expect(detail.locator("[data-test=detail-error]")).to_have_text("HTTP_500")
    await expect(detail.locator("[data-test=detail-status]")).to_have_text(
        "500 Internal Server Error"
    )
    await shot(page, "request-log-failure")


async def test_settings_and_conversations(page: Page, system: System) -> None:
    channel = await system.create_channel("/ui-convo", name="Help Center")
    for n, text in enumerate(("Hi, I need help with my order", "It is order 1042"), 1):
        resp = await system.send(
            channel["id"],
            {
                "sender_id": "user_7",
                "sender_name": "Olena",
                "text": text,
                "metadata": {"order": 1042},
                "attachments": [
                    {
                        "type": "image",
                        "url": "https://example.com/receipt.png",
                        "name": "receipt.png",
                    }
                ],
            },
        )
        assert resp.status_code == 200
        await system.receiver.wait_for("/ui-convo", n)
    await sign_in(page)

    await open_channel(page, channel["id"], "settings")
    await page.fill("#f-name", "Help Center EU")
    await page.fill("#f-assistant-temperature", "0.2")
    await page.fill("#f-outgoing_url", "http://insecure.example.com/x")
    await page.click("[data-test=save]")
    error = page.locator("[data-field=outgoing_url] .error")
    await expect(error).to_contain_text("https://")
    await page.fill("#f-outgoing_url", channel["outgoing_url"])
    await page.click("[data-test=save]")
    await expect(page.locator("[data-test=channel-name]")).to_have_text("Help Center EU")
    saved = await api(system, f"/api/channels/{channel['id']}")
    assert saved["name"] == "Help Center EU"
    assert saved["assistant"]["temperature"] == 0.2
    await expect(page.locator(".crumbs .here")).to_have_text("Help Center EU")
    await page.evaluate("window.scrollTo(0, 0)")
    await shot(page, "settings")

    await page.click("[data-tab=conversations]")
    await page.locator(".conv-item[data-sender=user_7]").click()
    thread = page.locator("[data-test=thread]")
    await expect(thread.locator(".msg.user")).to_have_count(2)
    await expect(thread.locator(".msg.assistant")).to_have_count(2)
    await expect(thread.locator(".msg.user").first).to_contain_text("Hi, I need help with my order")
    await expect(thread.locator(".attachment").first).to_have_text("imagereceipt.png")
    assert await thread.locator(".attachment").first.get_attribute("href") == (
        "https://example.com/receipt.png"
    )
    await expect(thread.locator(".msg.assistant .badge[data-status=delivered]")).to_have_count(
        2, timeout=15_000
    )
    await shot(page, "conversations")

    legacy = await system.create_channel("/ui-legacy", name="Legacy Widget")
    await system.admin.post(f"/api/channels/{legacy['id']}/disconnect")
    await page.goto("/#/")
    legacy_row = page.locator(f"tr[data-channel={legacy['id']}]")
    await expect(legacy_row.locator(".badge")).to_have_text("Disconnected")
    row = page.locator(f"tr[data-channel={channel['id']}]")
    await expect(row).to_contain_text("Help Center EU")
    await expect(row.locator(".badge")).to_have_text("Connected")
    await shot(page, "channels")


async def test_ui_page_is_static_with_a_strict_content_security_policy(system: System) -> None:
    resp = await system.http.get(system.url("admin", "/"))
    assert resp.status_code == 200
    assert '<div id="app">' in resp.text
    assert ADMIN_TOKEN not in resp.text
    csp = resp.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert '<script type="module" src="/static/js/main.js">' in resp.text
    # Every module the page loads: a JavaScript type (nosniff refuses anything
    # else), the same CSP, and no HTML built from strings.
    modules = sorted((ROOT / "services/admin/src/happ_admin/static/js").glob("*.js"))
    assert len(modules) > 5
    for module in modules:
        js = await system.http.get(system.url("admin", f"/static/js/{module.name}"))
        assert js.status_code == 200, module.name
        assert js.headers["content-type"].split(";")[0] in (
            "text/javascript",
            "application/javascript",
        )
        assert "script-src 'self'" in js.headers["Content-Security-Policy"]
        assert "innerHTML" not in js.text
        assert "outerHTML" not in js.text
        assert "insertAdjacentHTML" not in js.text
