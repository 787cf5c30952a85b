"""A reply's first attempt is logged inside its delivery state, not as a
``request_log`` document of its own (happ_common.deliveries): the admin API
still lists, pages, filters and shows it like every other entry."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from happ_admin.request_log.repository import RequestLogRepository
from happ_common.deliveries import FIRST_ATTEMPT, delivery_id, delivery_of_log_id
from happ_common.ids import new_log_id
from happ_common.kept_log_retention import KeptLogRetention
from happ_common.mongo import DELIVERIES
from happ_common.request_log import LogEntry
from happ_common.webhook_client import AttemptOutcome
from happ_delivery.repository import DeliveryRepository
from tests.conftest import System, first_log_page

OK = AttemptOutcome(True, 200, None, None, 3.0, "ok")


def _entry(channel_id: str, reply_id: str, at: datetime | None = None) -> LogEntry:
    return LogEntry(
        id=new_log_id(),
        channel_id=channel_id,
        direction="outgoing",
        created_at=at or datetime.now(UTC),
        url="https://example.test/in",
        status_code=200,
        duration_ms=3.0,
        request_body='{"text":"hi"}',
        message_id=reply_id,
        attempt=1,
    )


async def test_first_attempts_are_listed_paged_and_shown_with_the_rest_of_the_log(
    system: System,
) -> None:
    c = await system.create_channel("/first-attempts")
    sent = []
    for i in range(3):
        resp = await system.send(c["id"], {"sender_id": f"u{i}", "text": f"hello {i}"})
        sent.append(resp.json()["message_id"])
        assert (await system.send(c["id"], {"text": "no sender"})).status_code == 422
    await system.receiver.wait_for("/first-attempts", 3)

    everything = await system.log_when(c["id"], 9)  # 3 accepted, 3 refused, 3 first attempts
    outgoing = [e for e in everything if e["direction"] == "outgoing"]
    assert len(outgoing) == 3 and all(e["id"].startswith("att1_") for e in outgoing)
    assert all(e["attempt"] == 1 and e["status_code"] == 200 for e in outgoing)
    # Not also written to the request log.
    raw = await system.db.request_log.count_documents(
        {"channel_id": c["id"], "direction": "outgoing"}
    )
    assert raw == 0
    keys = [(e["created_at"], e["id"]) for e in everything]
    assert keys == sorted(keys, reverse=True)

    # Pages of two walk the merged log without a gap or a repeat.
    seen = [e["id"] for e in await system.log(c["id"], limit=2)]
    assert seen == [e["id"] for e in everything]
    assert [e["id"] for e in await system.log(c["id"], direction="outgoing", status="2xx")] == [
        e["id"] for e in outgoing
    ]
    assert await system.log(c["id"], direction="outgoing", status="failed") == []

    one = await system.admin.get(f"/api/logs/{outgoing[0]['id']}")
    assert one.status_code == 200 and one.json() == outgoing[0]
    forged = outgoing[0]["id"][:-4] + "0000"
    assert (await system.admin.get(f"/api/logs/{forged}")).status_code == 404

    status = (await system.admin.get(f"/api/channels/{c['id']}/messages/{sent[0]}")).json()
    assert [a["attempt"] for a in status["attempts"]] == [1]
    assert status["attempts"][0]["id"].startswith("att1_")


async def test_a_first_attempt_whose_state_another_member_stored_is_the_callers_to_log(
    system: System,
) -> None:
    repo = DeliveryRepository(system.db)
    channel_id, reply_id = "cm_" + uuid.uuid4().hex[:12], "rpl_" + uuid.uuid4().hex
    mine = _entry(channel_id, reply_id)
    stored = await repo.record(
        channel_id, reply_id, "delivered", attempt=1, outcome=OK, claimed=False, attempt_log=mine
    )
    assert stored
    # The same insert again (it landed, then an error had it retried): still kept.
    assert await repo.record(
        channel_id, reply_id, "delivered", attempt=1, outcome=OK, claimed=False, attempt_log=mine
    )
    # Another member's sending of the same attempt: its state lost, so its entry
    # is the caller's to write to the request log.
    theirs = _entry(channel_id, reply_id)
    assert not await repo.record(
        channel_id, reply_id, "delivered", attempt=1, outcome=OK, claimed=False, attempt_log=theirs
    )
    doc = await system.db.deliveries.find_one({"_id": delivery_id(channel_id, reply_id)})
    assert doc is not None
    assert delivery_of_log_id(doc["first_attempt"]["id"]) == doc["_id"]
    assert doc["first_attempt"]["id"].endswith(mine.id)
    await repo.drain()


async def test_a_first_attempt_is_shown_and_kept_as_long_as_the_request_log_keeps_entries(
    system: System,
) -> None:
    repo = DeliveryRepository(system.db)
    channel_id = (await system.create_channel("/first-attempt-retention"))["id"]
    old_reply, new_reply = "rpl_" + uuid.uuid4().hex, "rpl_" + uuid.uuid4().hex
    long_ago = datetime.now(UTC) - timedelta(days=2)
    for reply_id, at in ((old_reply, long_ago), (new_reply, None)):
        await repo.record(
            channel_id,
            reply_id,
            "delivered",
            attempt=1,
            outcome=OK,
            claimed=False,
            attempt_log=_entry(channel_id, reply_id, at),
        )
    admin = RequestLogRepository(system.db, retention_days=1)
    listed = await first_log_page(admin, channel_id)
    assert [e.message_id for e in listed] == [new_reply]
    assert await admin.attempts(channel_id, old_reply) == []
    assert [e.message_id for e in await admin.attempts(channel_id, new_reply)] == [new_reply]
    old_id = await system.db.deliveries.find_one({"_id": delivery_id(channel_id, old_reply)})
    assert old_id is not None
    assert await admin.log(old_id["first_attempt"]["id"]) is None
    # Kept for longer, it is shown.
    kept_longer = RequestLogRepository(system.db, retention_days=3)
    assert len(await kept_longer.attempts(channel_id, old_reply)) == 1

    # Then the delivery members remove it from the state, which stays.
    sweep = KeptLogRetention(system.db, DELIVERIES, FIRST_ATTEMPT, retention_days=1)
    assert await sweep.sweep() == 1
    states = {d["reply_id"]: d async for d in system.db.deliveries.find({"channel_id": channel_id})}
    assert "first_attempt" not in states[old_reply] and states[old_reply]["status"] == "delivered"
    assert "first_attempt" in states[new_reply]
    assert await sweep.sweep() == 0
