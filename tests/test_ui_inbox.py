"""The operators' side of the web UI in a real headless Chromium: the Inbox with
its live updates, and the channel's "Who answers & filters" settings.

Each test drives the UI as a person does and checks the result on screen, at the
test receiver (what the user was sent) and through the API. Nothing is reloaded
while waiting for a change: what shows up arrives through ``/api/events``.
Screenshots go where ``tests/test_ui_browser.py`` puts them (docs/screenshots
with ``HAPP_UPDATE_SCREENSHOTS=1``).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any
from urllib.parse import quote

from playwright.async_api import Locator, Page, expect

from tests.conftest import System
from tests.test_ui_browser import api, browser, open_channel, page, shot, sign_in

__all__ = ["browser", "page"]  # the fixtures, shared with the other browser tests

LONG = 20_000  # ms: a delivery, a handoff event, a live update


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def conv_item(page: Page, section: str, channel: dict[str, Any], sender: str) -> Locator:
    return page.locator(
        f'.inbox-section[data-section={section}] .inbox-item[data-channel="{channel["id"]}"]'
        f'[data-sender="{sender}"]'
    )


async def sign_in_as(page: Page, username: str, password: str) -> None:
    await page.goto("/")
    await page.fill("[data-test=username]", username)
    await page.fill("[data-test=password]", password)
    await page.click("button[type=submit]")
    await expect(page.locator("h1", has_text="Custom Messenger")).to_be_visible()


async def operator_flow(
    page: Page, system: System, channel: dict[str, Any], path: str, me: str, name: str
) -> None:
    """Open the Inbox, see a new message arrive, take over, reply (delivered), hand back."""
    # A sender id with a slash and a space: it must travel as one path segment.
    sender = "visitor/7 web"
    await page.click("[data-nav=inbox]")
    await expect(page.locator("h1", has_text="Inbox")).to_be_visible()
    await expect(page.locator("[data-test=live]")).to_have_class("live on")
    waiting = conv_item(page, "waiting", channel, sender)
    await expect(waiting).to_have_count(0)

    # A message to a channel in "operators" mode: it waits, and shows up by itself.
    resp = await system.send(
        channel["id"], {"sender_id": sender, "sender_name": name, "text": "Hi, is anybody there?"}
    )
    assert resp.status_code == 200, resp.text
    await expect(waiting).to_be_visible(timeout=LONG)
    await expect(waiting.locator("[data-test=unread]")).to_have_text("1")
    await expect(waiting.locator(".preview")).to_have_text("Hi, is anybody there?")
    await expect(page.locator("[data-test=inbox-count]")).to_be_visible()
    await shot(page, "inbox-waiting")

    # Open it: the whole history, the handoff notice, no composer until I hold it.
    await waiting.click()
    assert "/inbox/" + channel["id"] + "/" + quote(sender, safe="") in page.url
    pane = page.locator("[data-test=conv-pane]")
    await expect(pane.locator("[data-test=conv-name]")).to_have_text(name)
    await expect(pane.locator(".msg.user .bubble")).to_have_text(["Hi, is anybody there?"])
    await expect(pane.locator(".msg.event[data-event=handoff]")).to_contain_text(
        "A person will answer you shortly.", timeout=LONG
    )
    await expect(pane.locator("[data-test=composer]")).to_be_disabled()
    await expect(waiting.locator("[data-test=unread]")).to_have_count(0, timeout=LONG)

    await pane.locator("[data-test=take]").click()
    mine = conv_item(page, "mine", channel, sender)
    await expect(mine).to_be_visible()
    await expect(waiting).to_have_count(0)
    await expect(pane.locator("[data-test=conv-state]")).to_have_text("You hold it")
    composer = pane.locator("[data-test=composer]")
    await expect(composer).to_be_enabled()

    # Reply: Shift+Enter is a new line, Enter sends; the reply turns delivered.
    await composer.fill("Hello Marta, this is")
    await composer.press("Shift+Enter")
    await composer.type("your support team. How can I help?")
    await composer.press("Enter")
    reply = pane.locator(".msg.operator").last
    await expect(reply.locator(".bubble")).to_have_text(
        "Hello Marta, this is\nyour support team. How can I help?"
    )
    await expect(reply.locator(".byline")).to_have_text(me)
    await expect(reply.locator(".badge[data-status=delivered]")).to_be_visible(timeout=LONG)
    await expect(composer).to_have_value("")
    sent = [r.json() for r in system.receiver.on_path(path)]
    (operator_body,) = [
        b for b in sent if not b.get("event") and b.get("text", "").startswith("Hello")
    ]
    assert operator_body["text"] == "Hello Marta, this is\nyour support team. How can I help?"
    assert operator_body["author"] == {"type": "operator", "name": me}

    # The user answers: it shows up in the open conversation, no reload.
    resp = await system.send(
        channel["id"], {"sender_id": sender, "sender_name": name, "text": "My order is late."}
    )
    assert resp.status_code == 200, resp.text
    await expect(pane.locator(".msg.user").last.locator(".bubble")).to_have_text(
        "My order is late.", timeout=LONG
    )
    await shot(page, "inbox")

    # Hand back: out of my list, the assistant has it again.
    await pane.locator("[data-test=hand-back]").click()
    await expect(mine).to_have_count(0)
    await expect(pane.locator("[data-test=conv-state]")).to_have_text("Assistant")
    await expect(pane.locator(".msg.event[data-event=hand_back]")).to_be_visible(timeout=LONG)
    await expect(composer).to_be_disabled()
    await expect(pane.locator("[data-test=take]")).to_be_visible()


async def test_inbox_admin_takes_over_replies_and_hands_back(page: Page, system: System) -> None:
    path = "/" + unique("ui-inbox-admin")
    channel = await system.create_channel(
        path,
        name="Support Desk",
        mode="operators",
        handoff_text="A person will answer you shortly.",
    )
    await sign_in(page)
    await operator_flow(page, system, channel, path, "Admin", "Marta")


async def test_inbox_operator_signs_in_with_a_password_and_sees_only_their_channels(
    page: Page, system: System
) -> None:
    path = "/" + unique("ui-inbox-op")
    channel = await system.create_channel(
        path,
        name="Help Line",
        mode="operators",
        handoff_text="A person will answer you shortly.",
    )
    hidden = await system.create_channel("/" + unique("ui-inbox-other"), name="Not Mine")
    username, password = unique("olena"), "correct horse battery staple"
    created = await system.admin.post(
        "/api/users",
        json={
            "username": username,
            "name": "Olena",
            "password": password,
            "role": "operator",
            "channels": [channel["id"]],
        },
    )
    assert created.status_code == 201, created.text

    await sign_in_as(page, username, password)
    await expect(page.locator("[data-test=who]")).to_contain_text("Olena")
    # Operators see their channels, and none of the admin-only controls.
    await expect(page.locator(f"tr[data-channel={channel['id']}]")).to_be_visible()
    await expect(page.locator(f"tr[data-channel={hidden['id']}]")).to_have_count(0)
    await expect(page.locator("[data-test=new-channel]")).to_have_count(0)
    await open_channel(page, channel["id"])
    await expect(page.locator("[data-test=disconnect]")).to_have_count(0)
    await expect(page.locator("[data-test=secret-hidden]")).to_be_visible()
    await page.click("[data-tab=settings]")
    await expect(page.locator("[data-test=read-only]")).to_be_visible()
    await expect(page.locator("[data-test=save]")).to_have_count(0)

    await operator_flow(page, system, channel, path, "Olena", "Marta")


async def test_who_answers_and_filters_settings(page: Page, system: System) -> None:
    channel = await system.create_channel("/" + unique("ui-rules"), name="Order Desk")
    await sign_in(page)
    await open_channel(page, channel["id"], "settings")
    rules = page.locator("[data-test=rules]")
    await rules.scroll_into_view_if_needed()

    await page.select_option("#f-mode", "assistant_with_handoff")
    await page.fill("#f-handoff_keywords", "human agent\n\noperator\n")
    await page.fill("#f-handoff_text", "Connecting you to our team.")
    await page.fill("#f-routes", "keyword: refund\nregex: ^order\\s+(\\d+\n")
    await page.fill("#f-ignore_senders", "spam_bot_1")
    await page.click("[data-test=add-hours]")
    row = page.locator(".wh-row").first
    await row.locator(".day", has_text="Sat").click()
    await page.fill("#f-working_hours-timezone", "Europe/Kyiv")
    await page.fill("#f-off_hours_text", "We are closed; we answer from 9:00.")
    await page.fill("#f-sender_rate_per_minute", "20")

    # A regular expression that does not compile: the error is shown on its line.
    await page.click("[data-test=save]")
    error = page.locator("[data-field=routes] > .error")
    await expect(error).to_contain_text("Line 2")
    await expect(error).to_contain_text("regular expression")

    await page.fill("#f-routes", "keyword: refund\nregex: ^order\\s+\\d+\n")
    await row.locator("[data-part=end]").fill("08:00")
    await page.click("[data-test=save]")
    await expect(page.locator('[data-field="working_hours.intervals.0"] > .error')).to_contain_text(
        "after start"
    )
    await row.locator("[data-part=end]").fill("18:00")
    await page.click("[data-test=save]")
    await expect(page.locator(".toast")).to_contain_text("Settings saved.")

    saved = await api(system, f"/api/channels/{channel['id']}")
    assert saved["mode"] == "assistant_with_handoff"
    assert saved["handoff_keywords"] == ["human agent", "operator"]
    assert saved["handoff_text"] == "Connecting you to our team."
    assert saved["routes"] == [
        {"match": "keyword", "pattern": "refund"},
        {"match": "regex", "pattern": "^order\\s+\\d+"},
    ]
    assert saved["ignore_senders"] == ["spam_bot_1"]
    assert saved["working_hours"] == {
        "timezone": "Europe/Kyiv",
        "intervals": [
            {"days": ["mon", "tue", "wed", "thu", "fri", "sat"], "start": "09:00", "end": "18:00"}
        ],
    }
    assert saved["off_hours_text"] == "We are closed; we answer from 9:00."
    assert saved["sender_rate_per_minute"] == 20
    await expect(page.locator("[data-test=mode]")).to_have_text("AI, hands off to a person")
    await rules.scroll_into_view_if_needed()
    await shot(page, "settings-filters")

    # Emptied fields clear what they set: explicit nulls.
    await page.fill("#f-sender_rate_per_minute", "")
    await page.fill("#f-off_hours_text", "")
    await page.locator(".wh-row button", has_text="✕").click()
    await page.fill("#f-working_hours-timezone", "")
    await page.click("[data-test=save]")
    await expect(page.locator(".toast").last).to_contain_text("Settings saved.")
    cleared = await api(system, f"/api/channels/{channel['id']}")
    assert cleared["working_hours"] is None
    assert cleared["off_hours_text"] is None
    assert cleared["sender_rate_per_minute"] is None


async def test_inbox_reconnects_and_catches_up_after_the_stream_drops(
    page: Page, system: System
) -> None:
    path = "/" + unique("ui-inbox-drop")
    channel = await system.create_channel(path, name="Night Desk", mode="operators")
    await sign_in(page)
    await page.click("[data-nav=inbox]")
    live = page.locator("[data-test=live]")
    await expect(live).to_have_class("live on")

    # The admin goes away and comes back (a deploy): the stream drops meanwhile.
    await asyncio.to_thread(system.stack.services["admin"].kill)
    await expect(live).to_contain_text("Reconnecting…", timeout=LONG)
    resp = await system.send(channel["id"], {"sender_id": "night-owl", "text": "Still open?"})
    assert resp.status_code == 200, resp.text
    await system.receiver.wait_for(path, 1)  # the handoff event: it is waiting now
    await asyncio.to_thread(system.stack.start_service, "admin")
    await asyncio.to_thread(system.stack.wait_ready, "admin", 60)

    # The new admin never sends an event for it (it changed before it started):
    # the browser reconnects by itself and reloads the lists.
    await expect(live).to_have_class("live on", timeout=LONG)
    await expect(conv_item(page, "waiting", channel, "night-owl")).to_be_visible(timeout=LONG)
