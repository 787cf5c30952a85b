"""Bulk recovery (POST /api/channels/{id}/recover) against the running system:
exactly the replies that ended failed since the time are sent again, each
conversation's in order, the delivered and older ones not; asking twice sends
nothing twice; progress is read from the replies' delivery states."""

from __future__ import annotations

import asyncio
import inspect
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from pymongo.errors import AutoReconnect

from happ_admin.recovery.repository import LOCK_TTL, RecoveryDoc, RecoveryRepository
from happ_admin.recovery.service import _BEAT_S, RecoveryService
from happ_common.deliveries import STRANDED_CLAIM_S, delivery_id
from happ_common.ids import conversation_id
from happ_common.kafka import EventPublisher
from happ_common.messages import StoredMessage
from tests.conftest import System, eventually
from tests.test_users import new_user, signed_in


async def _reply_of(system: System, channel_id: str, message_id: str, status: str) -> str:
    """The reply id of ``message_id``, once its delivery is ``status``."""
    found: dict[str, Any] = {}

    async def reached() -> bool:
        resp = await system.admin.get(f"/api/channels/{channel_id}/messages/{message_id}")
        if resp.status_code == 200 and resp.json()["status"] == status:
            found.update(resp.json())
            return True
        return False

    await eventually(reached, timeout_s=60)
    reply_id: str = found["reply"]["message_id"]
    return reply_id


async def _send(system: System, channel_id: str, sender: str, text: str) -> str:
    resp = await system.send(channel_id, {"sender_id": sender, "text": text})
    assert resp.status_code == 200, resp.text
    message_id: str = resp.json()["message_id"]
    return message_id


async def _recovery(system: System, channel_id: str, recovery_id: str) -> dict[str, Any]:
    resp = await system.admin.get(f"/api/channels/{channel_id}/recoveries/{recovery_id}")
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def test_recovery_resends_exactly_the_failed_replies_in_order(system: System) -> None:
    path = "/recover"
    c = await system.create_channel(path)
    cid = c["id"]

    # Failed before the recovery's time: not sent again.
    system.receiver.behaviour[path] = (500, 0.0)
    old = await _send(system, cid, "carol", "before")
    old_reply = await _reply_of(system, cid, old, "retrying")
    since = datetime.now(UTC)
    await asyncio.sleep(0.05)

    # Delivered since then: not sent again either.
    system.receiver.behaviour[path] = (200, 0.0)
    ok = await _send(system, cid, "alice", "delivered")
    ok_reply = await _reply_of(system, cid, ok, "delivered")

    system.receiver.behaviour[path] = (500, 0.0)
    sent = {
        "alice": [await _send(system, cid, "alice", f"a{i}") for i in range(3)],
        "bob": [await _send(system, cid, "bob", f"b{i}") for i in range(2)],
    }
    failed = {
        sender: [await _reply_of(system, cid, m, "failed") for m in ids]
        for sender, ids in sent.items()
    }
    await _reply_of(system, cid, old, "failed")
    before = len(system.receiver.on_path(path))

    system.receiver.behaviour[path] = (200, 0.0)
    first = await system.admin.post(
        f"/api/channels/{cid}/recover", json={"since": since.isoformat()}
    )
    assert first.status_code == 202, first.text
    # Asked again at once: the running recovery answers, or, if it has finished,
    # a new one that finds nothing failed. Either way nothing is sent twice.
    second = await system.admin.post(
        f"/api/channels/{cid}/recover", json={"since": since.isoformat()}
    )
    assert second.status_code in (200, 202), second.text
    if second.status_code == 200:
        assert second.json()["id"] == first.json()["id"]
    rid = first.json()["id"]

    async def finished() -> bool:
        r = await _recovery(system, cid, rid)
        return bool(r["state"] == "done" and r["counts"]["delivered"] == 5)

    await eventually(finished, timeout_s=60)
    progress = await _recovery(system, cid, rid)
    assert progress["total"] == 5
    assert progress["counts"] == {"queued": 0, "delivered": 5, "failed": 0}
    assert progress["since"].startswith(since.isoformat()[:19])

    if second.status_code == 202:
        await eventually(lambda: _state_is(system, cid, second.json()["id"], "done"), timeout_s=30)
        other = await _recovery(system, cid, second.json()["id"])
        assert other["total"] == 0

    await asyncio.sleep(1.0)  # anything sent twice would arrive by now
    resent = [r.json()["message_id"] for r in system.receiver.on_path(path)[before:]]
    assert sorted(resent) == sorted(failed["alice"] + failed["bob"])
    for sender, replies in failed.items():
        assert [r for r in resent if r in replies] == replies, sender
    assert ok_reply not in resent and old_reply not in resent
    for r in system.receiver.on_path(path)[before:]:
        assert r.headers["X-HAPP-Attempt"] == "1"

    # Nothing is failed any more: a third request queues nothing.
    third = await system.admin.post(
        f"/api/channels/{cid}/recover", json={"since": since.isoformat()}
    )
    assert third.status_code == 202, third.text
    await eventually(lambda: _state_is(system, cid, third.json()["id"], "done"), timeout_s=30)
    assert (await _recovery(system, cid, third.json()["id"]))["total"] == 0
    listed = (await system.admin.get(f"/api/channels/{cid}/recoveries")).json()["items"]
    assert listed[0]["id"] == third.json()["id"]
    assert rid in [r["id"] for r in listed]


async def _state_is(system: System, channel_id: str, recovery_id: str, state: str) -> bool:
    return bool((await _recovery(system, channel_id, recovery_id))["state"] == state)


def test_a_recovery_taking_over_a_dead_ones_lock_finds_its_claims_stranded() -> None:
    # The dead recovery's last claim came at most a beat and a publish after it
    # last renewed its lock, which is taken over LOCK_TTL after that renewal:
    # by then the claim must count as stranded, or the new recovery would skip
    # it and send the conversation's later replies first.
    publish_timeout_s = inspect.signature(EventPublisher).parameters["timeout_s"].default
    takeover_after_claim_s = LOCK_TTL.total_seconds() - _BEAT_S - publish_timeout_s
    assert takeover_after_claim_s > STRANDED_CLAIM_S


async def test_recovery_needs_a_connected_channel_and_a_time(system: System) -> None:
    c = await system.create_channel("/recover-off")
    no_time = await system.admin.post(f"/api/channels/{c['id']}/recover", json={})
    assert no_time.status_code == 422
    await system.admin.post(f"/api/channels/{c['id']}/disconnect")
    refused = await system.admin.post(
        f"/api/channels/{c['id']}/recover", json={"since": "2026-01-01T00:00:00Z"}
    )
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "CHANNEL_DISCONNECTED"
    # A channel answering only in the webhook's response has nothing to send.
    await system.admin.post(f"/api/channels/{c['id']}/connect")
    await system.admin.patch(f"/api/channels/{c['id']}", json={"delivery": "response"})
    in_response = await system.admin.post(
        f"/api/channels/{c['id']}/recover", json={"since": "2026-01-01T00:00:00Z"}
    )
    assert in_response.status_code == 409
    assert in_response.json()["error"]["code"] == "REPLIES_NOT_POSTED"
    missing = await system.admin.get(f"/api/channels/{c['id']}/recoveries/rcv_nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "RECOVERY_NOT_FOUND"


async def test_operators_follow_recoveries_but_only_admins_start_them(system: System) -> None:
    mine = await system.create_channel("/recover-op")
    other = await system.create_channel("/recover-op-other")
    user = await new_user(system, channels=[mine["id"]])
    async with signed_in(system, user["username"]) as op:
        refused = await op.post(
            f"/api/channels/{mine['id']}/recover", json={"since": "2026-01-01T00:00:00Z"}
        )
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "ADMIN_ONLY"
        assert (await op.get(f"/api/channels/{mine['id']}/recoveries")).status_code == 200
        foreign = await op.get(f"/api/channels/{other['id']}/recoveries")
        assert foreign.status_code == 403
        assert foreign.json()["error"]["code"] == "NOT_A_MEMBER"


class _DroppingRepository(RecoveryRepository):
    """The real repository, whose reads of messages fail ``drops`` times after
    the first, as a dropped connection would."""

    def __init__(self, system: System, drops: int) -> None:
        super().__init__(system.db)
        self.drops = drops
        self.reads = 0

    async def messages(self, *args: Any, **kwargs: Any) -> list[StoredMessage]:
        self.reads += 1
        if self.reads > 1 and self.drops:
            self.drops -= 1
            raise AutoReconnect("connection is already closed")
        return await super().messages(*args, **kwargs)


class _Requeues:
    def __init__(self, system: System) -> None:
        self.db = system.db
        self.queued: list[str] = []

    async def requeue(self, reply: StoredMessage, from_states: Any) -> bool:
        # What the real requeue's claim does: a reply leaves "failed" once.
        moved = await self.db.deliveries.update_one(
            {"_id": delivery_id(reply.channel_id, reply.message_id), "status": "failed"},
            {"$set": {"status": "pending"}},
        )
        if moved.modified_count:
            self.queued.append(reply.message_id)
        return moved.modified_count == 1


async def test_a_recovery_rides_out_a_dropped_database_connection_and_queues_once_in_order(
    system: System,
) -> None:
    cid = "cm_" + uuid.uuid4().hex[:16]
    since = datetime.now(UTC) - timedelta(minutes=1)
    replies: dict[str, list[str]] = {}
    for sender in ("ann", "ben", "cid"):
        await system.db.conversations.insert_one(
            {
                "_id": conversation_id(cid, sender),
                "channel_id": cid,
                "sender_id": sender,
                "last_message_at": datetime.now(UTC),
            }
        )
        replies[sender] = []
        for i in range(3):
            reply = StoredMessage(
                channel_id=cid,
                message_id=f"rpl_{sender}_{i}",
                sender_id=sender,
                role="assistant",
                text=f"{sender} {i}",
                created_at=datetime.now(UTC) + timedelta(milliseconds=i),
                status="pending",
            )
            await system.db.messages.insert_one(reply.model_dump())
            await system.db.deliveries.insert_one(
                {
                    "_id": delivery_id(cid, reply.message_id),
                    "channel_id": cid,
                    "reply_id": reply.message_id,
                    "status": "failed",
                    "attempts": 4,
                }
            )
            replies[sender].append(reply.message_id)
    repo = _DroppingRepository(system, drops=2)
    requeues = _Requeues(system)
    service = RecoveryService(repo, cast(Any, None), cast(Any, requeues))
    doc = RecoveryDoc(
        id="rcv_" + uuid.uuid4().hex,
        channel_id=cid,
        since=since,
        requested_at=datetime.now(UTC),
        heartbeat_at=datetime.now(UTC),
    )
    assert await repo.lock(cid, doc.id, datetime.now(UTC)) is None
    await repo.insert(doc)

    await service._run(doc)

    stored = await repo.get(cid, doc.id)
    assert stored is not None and stored.state == "done", stored
    assert repo.drops == 0  # the database did drop the connection, twice
    assert sorted(requeues.queued) == sorted(r for rs in replies.values() for r in rs)
    for sender, ids in replies.items():
        assert [r for r in requeues.queued if r in ids] == ids, sender
    assert stored.queued == 9
