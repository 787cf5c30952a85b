"""Users, password sign-in and channel memberships (SPEC §6a), on the real admin service."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from tests.conftest import System


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
        {
            "username": unique("ok"),
            "name": "x",
            "password": PASSWORD,
            "channels": ["cm_nope1234567890"],
        },
    ):
        resp = await system.admin.post("/api/users", json=body)
        assert resp.status_code == 422, body
