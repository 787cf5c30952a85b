"""The Settings tab's outgoing headers in headless Chromium: saved headers show
by name with their values masked (a value never reaches the page), a new value
replaces one, ✕ removes one, a refused name is explained at its row; the pace
and the delivery mode beside them."""

from __future__ import annotations

from playwright.async_api import Page, expect

from tests.conftest import System
from tests.test_ui_browser import browser, open_channel, page, sign_in

__all__ = ["browser", "page"]  # the fixtures, shared with test_ui_browser

SECRET = "Bearer ui-secret-91b2"


async def test_settings_show_headers_masked_and_edit_them(page: Page, system: System) -> None:
    channel = await system.create_channel(
        "/ui-headers", outgoing_headers={"Authorization": SECRET, "X-Old": "old-value"}
    )
    await sign_in(page)
    await open_channel(page, channel["id"], "settings")
    rows = page.locator("[data-test=outgoing-headers] .hdr-row")
    await expect(rows).to_have_count(2)
    await expect(rows.first.locator("[data-part=name]")).to_have_value("Authorization")
    await expect(rows.first.locator("[data-part=value]")).to_have_value("")
    assert "••••" in (
        await rows.first.locator("[data-part=value]").get_attribute("placeholder") or ""
    )
    html = await page.content()
    assert "ui-secret-91b2" not in html and "old-value" not in html

    # A header of HAPP's is refused, at its row.
    await page.click("[data-test=add-header]")
    await rows.nth(2).locator("[data-part=name]").fill("Content-Type")
    await rows.nth(2).locator("[data-part=value]").fill("text/plain")
    await page.click("[data-test=save]")
    await expect(rows.nth(2).locator(".error")).to_contain_text("cannot be overridden")

    await rows.nth(2).locator("[data-part=name]").fill("X-Route")
    await rows.nth(2).locator("[data-part=value]").fill("eu-1")
    await rows.first.locator("[data-part=value]").fill("Bearer rotated")
    await rows.nth(1).locator("button").click()
    await page.check("#f-typing_events")
    await page.fill("#f-outgoing_rate_per_second", "25")
    await page.fill("#f-outgoing_max_concurrency", "4")
    await page.select_option("#f-delivery", "both")
    await page.click("[data-test=save]")
    await expect(page.locator("[data-test=outgoing-headers] .hdr-row")).to_have_count(2)

    saved = (await system.admin.get(f"/api/channels/{channel['id']}")).json()
    assert saved["outgoing_headers"] == {"Authorization": "••••", "X-Route": "••••"}
    assert saved["typing_events"] is True
    assert saved["outgoing_rate_per_second"] == 25 and saved["outgoing_max_concurrency"] == 4
    assert saved["delivery"] == "both"
    stored = await system.db.channels.find_one({"_id": channel["id"]})
    assert stored is not None
    assert stored["outgoing_headers"] == {"Authorization": "Bearer rotated", "X-Route": "eu-1"}
    assert "Bearer rotated" not in await page.content()

    # The request log names the headers an attempt carried, masked.
    test = (await system.admin.post(f"/api/channels/{channel['id']}/test")).json()
    assert test["ok"], test
    await open_channel(page, channel["id"], f"log/{test['log_id']}")
    await expect(page.locator("[data-test=detail-headers]")).to_have_text(
        "Authorization: ••••, X-Route: ••••"
    )
    assert "Bearer rotated" not in await page.content()


async def test_a_channel_answering_in_the_response_needs_no_endpoint(
    page: Page, system: System
) -> None:
    await sign_in(page)
    await page.click("[data-test=new-channel]")
    await page.fill("#f-name", "Mobile backend")
    assert await page.locator("#f-outgoing_url").get_attribute("required") is not None
    await page.select_option("#f-delivery", "response")
    assert await page.locator("#f-outgoing_url").get_attribute("required") is None
    await page.click("[data-test=create]")

    await expect(page.locator("[data-test=channel-name]")).to_have_text("Mobile backend")
    channel_id = page.url.split("/channels/")[1].split("/")[0]
    channel = (await system.admin.get(f"/api/channels/{channel_id}")).json()
    assert channel["delivery"] == "response" and channel["outgoing_url"] == ""
