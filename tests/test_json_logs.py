"""One message followed across the four services' JSON logs by its message_id.

The session's services run with HAPP_LOG_FORMAT=json (tests/conftest.py)."""

from __future__ import annotations

import io
import json
import logging
import uuid
from typing import Any

from happ_common.log_context import bind_message, log_handler, message_context, message_scope
from happ_devtools.local_stack import SERVICES
from tests.conftest import System, eventually


def _lines(system: System, service: str) -> list[dict[str, Any]]:
    text = (system.stack.logs / f"{service}.log").read_text()
    # The services keep logging while the test reads: a last line without its
    # newline is still being written.
    complete = text[: text.rfind("\n") + 1]
    # split("\n"), not splitlines(): a line holds other tests' ids unescaped
    # (U+0085, U+2028...), which splitlines() would cut it at.
    return [json.loads(line) for line in complete.split("\n") if line.strip()]


async def test_one_message_carries_the_same_message_id_in_all_four_services(
    system: System,
) -> None:
    channel = await system.create_channel("/json-logs")
    message_id = f"msg-json-{uuid.uuid4().hex[:8]}"
    sent = await system.send(
        channel["id"], {"sender_id": "log-user", "text": "follow me", "message_id": message_id}
    )
    assert sent.status_code == 200, sent.text
    await system.receiver.wait_for("/json-logs", 1)

    # An operator resends the reply: the admin service's line about this message.
    # The receiver has the POST a moment before the delivery service records it
    # delivered; until then a resend is refused (409) as still in progress.
    async def resent() -> bool:
        resp = await system.admin.post(
            f"/api/channels/{channel['id']}/messages/{message_id}/resend"
        )
        assert resp.status_code in (202, 409), resp.text
        return resp.status_code == 202

    await eventually(resent, 10, interval_s=0.2)
    await system.receiver.wait_for("/json-logs", 2)

    def about_it(service: str) -> list[dict[str, Any]]:
        return [line for line in _lines(system, service) if line.get("message_id") == message_id]

    async def every_service_logged_it() -> bool:
        # The delivery logs the resent reply's delivery after the receiver saw it.
        return sum(1 for line in about_it("delivery") if "delivered" in line["message"]) == 2

    await eventually(every_service_logged_it, 10)
    for service in SERVICES:
        lines = about_it(service)
        assert lines, f"{service} logged nothing about {message_id}"
        for line in lines:
            assert line["service"] == service
            assert line["channel_id"] == channel["id"]
            assert {"time", "level", "logger", "message"} <= line.keys()
            if service != "admin":  # the admin's resend route names no conversation
                assert line["conversation_id"] == "log-user"
    assert any(line["message"] == "message accepted" for line in about_it("ingress"))
    handled = [line for line in about_it("assistant") if "handled" in line["message"]]
    reply_id = handled[0]["message"].split("reply ")[1]
    assert {line["reply_id"] for line in about_it("delivery")} == {reply_id}
    actions = about_it("admin")
    assert actions[-1]["message"].startswith("POST /api/channels/{channel_id}/messages/")
    assert actions[-1]["message"].endswith(": 202")


async def test_every_line_the_services_write_is_a_json_object(system: System) -> None:
    """Library lines too (uvicorn, aiokafka), and a line logged with an exception."""
    for service in SERVICES:
        lines = _lines(system, service)  # raises on a line that is not JSON
        assert lines and all(isinstance(line, dict) for line in lines)
        assert all(line["service"] == service for line in lines)
        assert any(line["logger"].startswith("uvicorn") for line in lines)


def _capture(fmt: str) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = log_handler("probe", "json" if fmt == "json" else "text")
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(out)
    logger = logging.getLogger(f"test.log_context.{fmt}.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return logger, out


def test_text_lines_end_with_the_bound_fields_and_scopes_do_not_leak() -> None:
    logger, out = _capture("text")
    with message_scope():
        bind_message(channel_id="ch_1", conversation_id="u1", message_id="m1")
        logger.info("inside")
        with message_context(reply_id="rpl_1"):
            logger.info("nested")
    logger.info("outside")
    inside, nested, outside = out.getvalue().splitlines()
    assert inside.endswith(
        "probe " + logger.name + ": inside channel_id=ch_1 conversation_id=u1 message_id=m1"
    )
    assert nested.endswith("message_id=m1 reply_id=rpl_1")
    assert outside.endswith(": outside")


def test_json_lines_carry_the_exception() -> None:
    logger, out = _capture("json")
    with message_context(message_id="m2"):
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed")
    (line,) = [json.loads(x) for x in out.getvalue().splitlines()]
    assert line["message"] == "failed" and line["message_id"] == "m2"
    assert "ValueError: boom" in line["exception"]
