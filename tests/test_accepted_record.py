"""A webhook accepted with the integrator's id is recorded by storing the user's
message itself, with the request's log entry on it (happ_ingress.repository):
one document for the message, its idempotency record and its log entry. The
admin API still lists, pages, filters and shows the entry like every other."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from happ_admin.request_log.repository import RequestLogRepository
from happ_common.events import InboundMessage
from happ_common.ids import accepted_log_id, message_of_accepted_log_id, new_log_id
from happ_common.kept_log_retention import KeptLogRetention
from happ_common.messages import ACCEPTED_REQUEST, user_message_document
from happ_common.mongo import MESSAGES
from happ_ingress.repository import AcceptedRecords
from tests.conftest import System, first_log_page


def _event(channel_id: str, message_id: str, owner: str) -> InboundMessage:
    return InboundMessage(
        channel_id=channel_id,
        message_id=message_id,
        sender_id="u",
        text="hi",
        received_at=datetime.now(UTC),
        accepted_by=owner,
    )


def _entry(channel_id: str, message_id: str, at: datetime | None = None) -> dict[str, Any]:
    return {
        "_id": new_log_id(),
        "channel_id": channel_id,
        "direction": "incoming",
        "created_at": at or datetime.now(UTC),
        "method": "POST",
        "url": f"/webhook/{channel_id}",
        "status_code": 200,
        "error_code": None,
        "duration_ms": 1.5,
        "request_body": '{"text":"hi"}',
        "response_body": None,
        "message_id": message_id,
    }


async def test_an_accepted_webhook_is_one_document_listed_paged_and_shown_with_the_log(
    system: System,
) -> None:
    c = await system.create_channel("/accepted-records")
    # The longest id there is, in a script of four bytes a character: its entry's
    # id names it, in base64.
    longest = uuid.uuid4().hex[:8] + "😀" * 120
    keyed = [f"k-{uuid.uuid4().hex}", f"k-{uuid.uuid4().hex}", longest]
    for i, key in enumerate(keyed):
        resp = await system.send(c["id"], {"sender_id": f"u{i}", "text": "hi", "message_id": key})
        assert resp.json() == {"status": "accepted", "message_id": key, "channel_id": c["id"]}
    # Sent without an id: a plain request-log entry, the message stored by the assistant.
    keyless = (await system.send(c["id"], {"sender_id": "u9", "text": "no id"})).json()
    assert (await system.send(c["id"], {"text": "no sender"})).status_code == 422
    await system.receiver.wait_for("/accepted-records", 4)

    everything = await system.log_when(c["id"], 9)  # 4 accepted, 1 refused, 4 first attempts
    incoming = [e for e in everything if e["direction"] == "incoming"]
    by_message = {e["message_id"]: e for e in incoming}
    assert set(by_message) == {*keyed, keyless["message_id"], None}
    for key in keyed:
        assert by_message[key]["id"] == accepted_log_id(c["id"], key)
        assert by_message[key]["status_code"] == 200 and by_message[key]["request_body"]
    # The keyed messages' entries are not in the request log: they are their messages.
    raw = await system.db.request_log.find({"channel_id": c["id"]}).to_list(None)
    assert sorted(e["message_id"] or "" for e in raw) == sorted(["", keyless["message_id"]])
    stored = await system.db.messages.find({"channel_id": c["id"], "role": "user"}).to_list(None)
    assert len(stored) == 4
    for doc in stored:
        if doc["message_id"] in keyed:
            assert doc["request"]["id"] == accepted_log_id(c["id"], doc["message_id"])
            assert doc["accepted_by"]
        else:
            assert "request" not in doc  # stored by the assistant, from the event

    # Pages of two walk the merged log without a gap or a repeat.
    seen = [e["id"] for e in await system.log(c["id"], limit=2)]
    assert seen == [e["id"] for e in everything]
    ok = await system.log(c["id"], direction="incoming", status="2xx")
    assert {e["message_id"] for e in ok} == {*keyed, keyless["message_id"]}
    assert [e["id"] for e in await system.log(c["id"], message_id=keyed[1])] == [
        accepted_log_id(c["id"], keyed[1])
    ]

    for key in (keyed[0], longest):
        one = await system.admin.get(f"/api/logs/{by_message[key]['id']}")
        assert one.status_code == 200 and one.json() == by_message[key]
    for forged in (
        accepted_log_id(c["id"], "never-sent"),
        by_message[keyed[0]]["id"] + "AA",
        "acc_" + c["id"] + ".%%%",
        "acc_nochannel.a2V5",
    ):
        assert (await system.admin.get(f"/api/logs/{forged}")).status_code == 404, forged
    status = (await system.admin.get(f"/api/channels/{c['id']}/messages/{keyed[0]}")).json()
    assert status["message"]["message_id"] == keyed[0] and status["status"] == "delivered"
    assert "request" not in status["message"]
    # The conversation shows the message, without the request kept on it.
    conversation = await system.admin.get(f"/api/channels/{c['id']}/conversations/u0/messages")
    (user,) = [m for m in conversation.json()["items"] if m["role"] == "user"]
    assert user["message_id"] == keyed[0] and "request" not in user


def test_an_accepted_entrys_id_names_its_message() -> None:
    for message_id in ("m-1", "ünï/cödé ?#&", "x" * 128):
        log_id = accepted_log_id("cm_abcdefghijkl", message_id)
        assert message_of_accepted_log_id(log_id) == ("cm_abcdefghijkl", message_id)
    assert message_of_accepted_log_id("log_0123") is None
    assert message_of_accepted_log_id("acc_cm_abcdefghijkl.") is None
    assert message_of_accepted_log_id("acc_cm_abcdefghijkl./w") is None


async def test_the_record_recognises_its_own_message_whoever_stored_it(system: System) -> None:
    records = AcceptedRecords(system.db)
    channel_id = "cm_" + uuid.uuid4().hex[:12]
    key = "k-" + uuid.uuid4().hex
    owner = secrets.token_hex(8)
    # The assistant consumed the event before the ingress's record landed.
    await system.db.messages.insert_one(user_message_document(_event(channel_id, key, owner)))
    assert await records.record(
        user_message_document(_event(channel_id, key, owner)), _entry(channel_id, key)
    )
    doc = await system.db.messages.find_one({"channel_id": channel_id, "message_id": key})
    assert doc is not None and doc["request"]["id"] == accepted_log_id(channel_id, key)
    assert doc["request"]["message_id"] == key and "_id" not in doc["request"]
    # Another request's copy of the same message is a repeat.
    other = secrets.token_hex(8)
    assert not await records.record(
        user_message_document(_event(channel_id, key, other)), _entry(channel_id, key)
    )
    again = await system.db.messages.find_one({"_id": doc["_id"]})
    assert again == doc
    await records.drain()


async def test_an_accepted_entry_is_shown_and_kept_as_long_as_the_request_log_keeps_entries(
    system: System,
) -> None:
    channel_id = (await system.create_channel("/accepted-retention"))["id"]
    records = AcceptedRecords(system.db)
    old_key, new_key = "k-" + uuid.uuid4().hex, "k-" + uuid.uuid4().hex
    long_ago = datetime.now(UTC) - timedelta(days=2)
    for key, at in ((old_key, long_ago), (new_key, None)):
        owner = secrets.token_hex(8)
        assert await records.record(
            user_message_document(_event(channel_id, key, owner)), _entry(channel_id, key, at)
        )
    await records.drain()

    # Past retention (1 day here), the admin no longer shows the old entry...
    admin = RequestLogRepository(system.db, retention_days=1)
    listed = await first_log_page(admin, channel_id)
    assert [e.message_id for e in listed] == [new_key]
    assert await admin.log(accepted_log_id(channel_id, old_key)) is None
    # Kept for longer, it is shown.
    assert await RequestLogRepository(system.db, retention_days=3).log(
        accepted_log_id(channel_id, old_key)
    )

    # Then the ingress members remove it from the message, which stays.
    sweep = KeptLogRetention(system.db, MESSAGES, ACCEPTED_REQUEST, retention_days=1)
    assert await sweep.sweep() == 1
    docs = {d["message_id"]: d async for d in system.db.messages.find({"channel_id": channel_id})}
    assert "request" not in docs[old_key] and docs[old_key]["text"] == "hi"
    assert "request" in docs[new_key]
    assert await sweep.sweep() == 0
