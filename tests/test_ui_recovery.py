"""The channel page's bulk recovery and deliveries-off notice, in headless Chromium."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from playwright.async_api import Page, expect

from tests.conftest import System, eventually
from tests.test_ui_browser import browser, open_channel, page, shot, sign_in

__all__ = ["browser", "page"]  # the fixtures this module uses


async def test_deliveries_off_notice_connect_and_recover(page: Page, system: System) -> None:
    path = "/ui-recover"
    system.receiver.behaviour[path] = (500, 0.0)
    c = await system.create_channel(path, name="Recovered shop")
    sent = await system.send(c["id"], {"sender_id": "ui-user", "text": "lost reply"})
    message_id = sent.json()["message_id"]

    async def failed() -> bool:
        r = await system.admin.get(f"/api/channels/{c['id']}/messages/{message_id}")
        return r.status_code == 200 and r.json()["status"] == "failed"

    await eventually(failed, timeout_s=40)
    # As the delivery service records it after the endpoint failed for long enough.
    since = datetime.now(UTC) - timedelta(minutes=5)
    await system.db.channels.update_one(
        {"_id": c["id"]},
        {
            "$set": {
                "endpoint_failing_since": since,
                "deliveries_disabled": {
                    "at": datetime.now(UTC),
                    "reason": "endpoint_failing",
                    "message": "Deliveries turned off automatically: every attempt to the "
                    "endpoint has failed since then.",
                    "failing_since": since,
                    "last_error_code": "HTTP_500",
                },
            }
        },
    )
    system.receiver.behaviour[path] = (200, 0.0)

    await sign_in(page)
    await open_channel(page, c["id"])
    notice = page.locator("[data-test=deliveries-disabled]")
    await expect(notice).to_contain_text("Deliveries off")
    await expect(notice).to_contain_text("every attempt to the endpoint has failed")
    await shot(page, "channel-deliveries-off")

    await page.click("[data-test=connect]")
    await page.click("[data-test=confirm-connect]")
    await expect(notice).to_have_count(0)

    await page.click("[data-test=recover]")
    await expect(page.locator("#recover-since")).to_have_value(
        since.strftime("%Y-%m-%dT%H:%M")  # the page's time zone is UTC
    )
    await page.click("[data-test=confirm-recover]")
    line = page.locator("[data-test=recovery-progress]")
    await expect(line).to_have_attribute("data-state", "done", timeout=30_000)
    await expect(line).to_contain_text("1 queued again · 1 delivered · 0 failed", timeout=30_000)
    await shot(page, "channel-recovery")
    assert len(system.receiver.on_path(path)) == 5  # four failed attempts, then the recovery
