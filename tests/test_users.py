"""Users, password sign-in and channel memberships (SPEC §6a), on the real admin service."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from tests.conftest import ADMIN_TOKEN, System, eventually


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


PASSWORD = "correct horse battery staple"


async def new_user(system: System, **fields: Any) -> dict[str, Any]:
    body = {"username": unique("op"), "name": "Olena", "password": PASSWORD, **fields}
    resp = await system.admin.post("/api/users", json=body)
    assert resp.status_code == 201, resp.text
    user: dict[str, Any] = resp.json()
    return user


@asynccontextmanager
async def signed_in(
    system: System, username: str, password: str = PASSWORD
) -> AsyncIterator[httpx.AsyncClient]:
    """A client holding a UI session (cookie and CSRF header), as the browser would."""
    async with httpx.AsyncClient(base_url=system.url("admin"), timeout=15) as client:
        resp = await client.post("/api/session", json={"username": username, "password": password})
        assert resp.status_code == 200, resp.text
        client.headers["X-CSRF-Token"] = resp.json()["csrf_token"]
        yield client


async def test_a_user_signs_in_with_a_password_stored_as_scrypt(system: System) -> None:
    user = await new_user(system, role="operator")
    assert "password" not in user and "password_hash" not in user
    doc = await system.db.users.find_one({"_id": user["id"]})
    assert doc is not None and doc["password_hash"].startswith("scrypt$16384$8$1$")
    assert PASSWORD not in doc["password_hash"]

    async with signed_in(system, user["username"]) as client:
        me = (await client.get("/api/session")).json()
        assert me["via"] == "cookie"
        assert me["user"] == {
            "id": user["id"],
            "name": "Olena",
            "role": "operator",
            "channels": [],
        }
    async with httpx.AsyncClient(base_url=system.url("admin"), timeout=15) as client:
        for body in (
            {"username": user["username"], "password": "wrong password!"},
            {"username": "nobody-at-all", "password": PASSWORD},
        ):
            resp = await client.post("/api/session", json=body)
            assert resp.status_code == 401
            assert resp.json()["error"]["message"] == "Wrong username or password."
        both = await client.post("/api/session", json={"token": "x", "username": "y"})
        assert both.status_code == 422


async def test_an_operator_sees_and_acts_only_on_their_channels(system: System) -> None:
    mine = await system.create_channel("/users-mine", mode="operators")
    other = await system.create_channel("/users-other", mode="operators")
    user = await new_user(system, channels=[mine["id"]])
    await system.send(other["id"], {"sender_id": "s1", "text": "hi"})
    async with signed_in(system, user["username"]) as client:
        listed = (await client.get("/api/channels?limit=200")).json()["items"]
        assert [c["id"] for c in listed] == [mine["id"]]
        assert listed[0]["hmac_secret"] is None  # only admins see secrets
        for path in (
            f"/api/channels/{other['id']}",
            f"/api/channels/{other['id']}/logs",
            f"/api/channels/{other['id']}/conversations",
            f"/api/channels/{other['id']}/conversations/s1/messages",
        ):
            resp = await client.get(path)
            assert (resp.status_code, resp.json()["error"]["code"]) == (403, "NOT_A_MEMBER"), path
        for path in ("/take", "/messages"):
            resp = await client.post(
                f"/api/channels/{other['id']}/conversations/s1{path}", json={"text": "x"}
            )
            assert (resp.status_code, resp.json()["error"]["code"]) == (403, "NOT_A_MEMBER")
        assert (await client.get(f"/api/channels/{mine['id']}/logs")).status_code == 200
        for method, path, body in (
            ("POST", "/api/channels", {"name": "x", "outgoing_url": system.endpoint("/x")}),
            ("PATCH", f"/api/channels/{mine['id']}", {"name": "renamed"}),
            ("POST", f"/api/channels/{mine['id']}/rotate-secret", None),
            ("POST", "/api/users", {"username": "x", "name": "x", "password": PASSWORD}),
            ("GET", "/api/users", None),
            ("GET", "/api/dead-letters", None),
        ):
            resp = await client.request(method, path, json=body)
            assert (resp.status_code, resp.json()["error"]["code"]) == (403, "ADMIN_ONLY"), path

        # A membership added takes effect on the next request.
        await system.admin.patch(
            f"/api/users/{user['id']}", json={"channels": [mine["id"], other["id"]]}
        )
        assert (await client.get(f"/api/channels/{other['id']}/logs")).status_code == 200
        members = (await system.admin.get(f"/api/channels/{other['id']}/members")).json()
        assert [m["id"] for m in members["items"]] == [user["id"]]


async def test_an_operator_takes_over_and_replies_under_their_own_name(system: System) -> None:
    channel = await system.create_channel("/users-reply", mode="operators")
    user = await new_user(system, name="Ann Support", channels=[channel["id"]])
    resp = await system.send(channel["id"], {"sender_id": "s2", "text": "hello?"})
    assert resp.status_code == 200
    await system.receiver.wait_for("/users-reply", 1)
    async with signed_in(system, user["username"]) as client:
        inbox = (await client.get("/api/inbox")).json()
        assert [c["sender_id"] for c in inbox["waiting"]] == ["s2"]
        took = await client.post(f"/api/channels/{channel['id']}/conversations/s2/take")
        assert took.status_code == 200, took.text
        assert took.json()["operator"]["id"] == user["id"]
        sent = await client.post(
            f"/api/channels/{channel['id']}/conversations/s2/messages", json={"text": "Hi!"}
        )
        assert sent.status_code == 202, sent.text
        assert [c["sender_id"] for c in (await client.get("/api/inbox")).json()["mine"]] == ["s2"]
    # The admin token sees it under "others"; a second operator cannot take it.
    assert "s2" in [c["sender_id"] for c in (await system.admin.get("/api/inbox")).json()["others"]]
    rival = await new_user(system, channels=[channel["id"]])
    async with signed_in(system, rival["username"]) as client:
        resp = await client.post(f"/api/channels/{channel['id']}/conversations/s2/take")
        assert (resp.status_code, resp.json()["error"]["code"]) == (409, "CONVERSATION_HELD")
    got = await system.receiver.wait_for("/users-reply", 3)
    reply = got[-1].json()
    assert reply["author"] == {"type": "operator", "name": "Ann Support"}
    assert reply["text"] == "Hi!"


async def test_disabling_a_user_or_changing_the_password_ends_their_sessions(
    system: System,
) -> None:
    user = await new_user(system)
    async with signed_in(system, user["username"]) as client:
        assert (await client.get("/api/inbox")).status_code == 200
        await system.admin.patch(f"/api/users/{user['id']}", json={"password": "another one 123"})
        assert (await client.get("/api/inbox")).status_code == 401
    async with signed_in(system, user["username"], "another one 123") as client:
        await system.admin.patch(f"/api/users/{user['id']}", json={"disabled": True})
        assert (await client.get("/api/inbox")).status_code == 401
    async with httpx.AsyncClient(base_url=system.url("admin"), timeout=15) as client:
        resp = await client.post(
            "/api/session", json={"username": user["username"], "password": "another one 123"}
        )
        assert resp.status_code == 401
    deleted = await system.admin.delete(f"/api/users/{user['id']}")
    assert deleted.status_code == 204
    assert (await system.admin.get(f"/api/users/{user['id']}")).status_code == 404


async def test_user_input_is_checked(system: System) -> None:
    user = await new_user(system)
    again = await system.admin.post(
        "/api/users", json={"username": user["username"], "name": "x", "password": PASSWORD}
    )
    assert (again.status_code, again.json()["error"]["code"]) == (409, "USERNAME_TAKEN")
    for body in (
        {"username": "Bad Name!", "name": "x", "password": PASSWORD},
        {"username": unique("ok"), "name": "x", "password": "short"},
        {"username": unique("ok"), "name": "x", "password": PASSWORD, "role": "root"},
    ):
        resp = await system.admin.post("/api/users", json=body)
        assert resp.status_code == 422, body
    unknown = {"username": unique("ok"), "name": "x", "password": PASSWORD}
    resp = await system.admin.post(
        "/api/users", json={**unknown, "channels": ["cm_nope1234567890"]}
    )
    assert (resp.status_code, resp.json()["error"]["code"]) == (404, "CHANNEL_NOT_FOUND")


async def _logs(system: System, channel_id: str, count: int) -> list[dict[str, Any]]:
    async def enough() -> bool:
        resp = await system.admin.get(f"/api/channels/{channel_id}/logs?limit=200")
        return len(resp.json()["items"]) >= count

    await eventually(enough)
    items: list[dict[str, Any]] = (
        await system.admin.get(f"/api/channels/{channel_id}/logs?limit=200")
    ).json()["items"]
    return items


async def test_a_foreign_channels_log_entries_messages_and_replies_are_refused(
    system: System,
) -> None:
    mine = await system.create_channel("/users-own-log")
    other = await system.create_channel("/users-foreign-log")
    for channel in (mine, other):
        resp = await system.send(channel["id"], {"sender_id": "s3", "text": "hello"})
        assert resp.status_code == 200, resp.text
    mine_log = await _logs(system, mine["id"], 2)  # incoming and the reply's delivery
    other_log = await _logs(system, other["id"], 2)
    incoming = next(e for e in other_log if e["direction"] == "incoming")
    reply = next(e for e in other_log if e["direction"] == "outgoing")
    user = await new_user(system, channels=[mine["id"]])

    async with signed_in(system, user["username"]) as client:
        assert (await client.get(f"/api/logs/{mine_log[0]['id']}")).status_code == 200
        for method, path in (
            ("GET", f"/api/logs/{incoming['id']}"),
            ("GET", f"/api/channels/{other['id']}/messages/{incoming['message_id']}"),
            ("POST", f"/api/channels/{other['id']}/messages/{reply['message_id']}/resend"),
            ("POST", f"/api/channels/{other['id']}/test"),
        ):
            resp = await client.request(method, path)
            assert (resp.status_code, resp.json()["error"]["code"]) == (403, "NOT_A_MEMBER"), path
        for method, path in (
            ("POST", f"/api/channels/{mine['id']}/disconnect"),
            ("POST", f"/api/channels/{mine['id']}/connect"),
            ("GET", f"/api/channels/{mine['id']}/members"),
            ("GET", f"/api/users/{user['id']}"),
            ("PATCH", f"/api/users/{user['id']}"),
            ("DELETE", f"/api/users/{user['id']}"),
        ):
            resp = await client.request(method, path, json={} if method == "PATCH" else None)
            assert (resp.status_code, resp.json()["error"]["code"]) == (403, "ADMIN_ONLY"), path
        # Still connected: the operator's attempt changed nothing.
        got = (await system.admin.get(f"/api/channels/{mine['id']}")).json()
        assert got["status"] == "connected"

        # A membership removed takes effect on the next request too.
        resp = await system.admin.patch(f"/api/users/{user['id']}", json={"channels": []})
        assert resp.status_code == 200 and resp.json()["channels"] == []
        assert (await client.get("/api/channels")).json()["items"] == []
        resp = await client.get(f"/api/logs/{mine_log[0]['id']}")
        assert (resp.status_code, resp.json()["error"]["code"]) == (403, "NOT_A_MEMBER")
        assert (await client.get("/api/session")).json()["user"]["channels"] == []


async def test_users_are_never_returned_with_their_password_hash(system: System) -> None:
    user = await new_user(system, role="operator")
    expected = {
        "id",
        "username",
        "name",
        "role",
        "channels",
        "disabled",
        "created_at",
        "updated_at",
        "last_login_at",
    }
    assert set(user) == expected
    patched = await system.admin.patch(
        f"/api/users/{user['id']}", json={"name": "Olena K.", "password": "a new password 42"}
    )
    assert patched.status_code == 200 and patched.json()["name"] == "Olena K."
    for resp in (
        patched,
        await system.admin.get(f"/api/users/{user['id']}"),
    ):
        assert set(resp.json()) == expected, resp.text
    listed = (await system.admin.get("/api/users")).json()["items"]
    assert user["id"] in [u["id"] for u in listed]
    assert all(set(u) == expected for u in listed)
    assert "scrypt$" not in str(listed)
    doc = await system.db.users.find_one({"_id": user["id"]})
    assert doc is not None and doc["password_hash"].startswith("scrypt$16384$8$1$")
    # Its salt is 16 random bytes, its key 32 (base64); a second hash differs.
    _, _, _, _, salt, key = doc["password_hash"].split("$")
    assert (len(salt), len(key)) == (24, 44)
    other = await new_user(system)
    other_doc = await system.db.users.find_one({"_id": other["id"]})
    assert other_doc is not None and other_doc["password_hash"] != doc["password_hash"]
    # The new password signs in, and the sign-in is recorded.
    async with signed_in(system, user["username"], "a new password 42"):
        pass
    got = (await system.admin.get(f"/api/users/{user['id']}")).json()
    assert got["last_login_at"] is not None


async def test_an_admin_user_and_a_token_see_every_channel_and_its_secret(
    system: System,
) -> None:
    channel = await system.create_channel("/users-admin")
    admin = await new_user(system, role="admin", name="Ada")
    async with signed_in(system, admin["username"]) as client:
        me = (await client.get("/api/session")).json()
        assert me["user"] == {"id": admin["id"], "name": "Ada", "role": "admin", "channels": None}
        got = (await client.get(f"/api/channels/{channel['id']}")).json()
        assert got["hmac_secret"] == channel["hmac_secret"] and got["hmac_secret"]
        resp = await client.post(
            "/api/users", json={"username": unique("by-ada"), "name": "B", "password": PASSWORD}
        )
        assert resp.status_code == 201, resp.text
    async with httpx.AsyncClient(base_url=system.url("admin"), timeout=15) as client:
        resp = await client.post("/api/session", json={"token": ADMIN_TOKEN})
        assert resp.status_code == 200
        token_user = {"id": "token", "name": "Admin", "role": "admin", "channels": None}
        assert resp.json()["user"] == token_user
        assert (await client.get("/api/session")).json()["user"] == token_user
    bearer = (await system.admin.get("/api/session")).json()
    assert (bearer["via"], bearer["user"]) == ("bearer", token_user)

    # An operator promoted to admin is one on the next request.
    user = await new_user(system)
    async with signed_in(system, user["username"]) as client:
        assert (await client.get(f"/api/channels/{channel['id']}")).status_code == 403
        await system.admin.patch(f"/api/users/{user['id']}", json={"role": "admin"})
        got = (await client.get(f"/api/channels/{channel['id']}")).json()
        assert got["hmac_secret"] == channel["hmac_secret"]


async def test_user_changes_are_checked_and_a_removed_users_session_ends(system: System) -> None:
    user = await new_user(system)
    real = await system.create_channel("/users-real")
    wanted = [real["id"], "cm_nosuchchannel123", "not-a-channel-id", real["id"]]
    resp = await system.admin.patch(f"/api/users/{user['id']}", json={"channels": wanted})
    assert (resp.status_code, resp.json()["error"]["code"]) == (404, "CHANNEL_NOT_FOUND")
    assert resp.json()["error"]["details"] == [
        {"field": "channels", "problem": "no channel cm_nosuchchannel123"},
        {"field": "channels", "problem": "no channel not-a-channel-id"},
    ]
    assert (await system.admin.get(f"/api/users/{user['id']}")).json()["channels"] == []
    resp = await system.admin.patch(f"/api/users/{user['id']}", json={"channels": wanted[:1] * 2})
    assert resp.status_code == 200 and resp.json()["channels"] == [real["id"]]
    for method in ("GET", "PATCH", "DELETE"):
        resp = await system.admin.request(
            method, "/api/users/usr_nobody", json={"name": "x"} if method == "PATCH" else None
        )
        assert (resp.status_code, resp.json()["error"]["code"]) == (404, "USER_NOT_FOUND")
    resp = await system.admin.get("/api/channels/cm_nosuchchannel123/members")
    assert resp.status_code == 404

    async with signed_in(system, user["username"]) as client:
        assert (await client.get("/api/session")).status_code == 200
        assert (await system.admin.delete(f"/api/users/{user['id']}")).status_code == 204
        resp = await client.get("/api/session")
        assert (resp.status_code, resp.json()["error"]["code"]) == (401, "UNAUTHORIZED")
    async with httpx.AsyncClient(base_url=system.url("admin"), timeout=15) as client:
        resp = await client.post(
            "/api/session", json={"username": user["username"], "password": PASSWORD}
        )
        assert resp.status_code == 401


async def test_an_open_live_stream_ends_when_the_user_is_disabled(system: System) -> None:
    user = await new_user(system)
    async with (
        signed_in(system, user["username"]) as client,
        client.stream("GET", "/api/events", timeout=30) as stream,
    ):
        assert stream.status_code == 200
        lines = stream.aiter_lines()
        assert (await anext(lines)).startswith("retry:")
        await system.admin.patch(f"/api/users/{user['id']}", json={"disabled": True})

        async def ends() -> None:
            async for _ in lines:
                pass

        # The stream asks every 5 s whether its session still holds.
        await asyncio.wait_for(ends(), timeout=12)
