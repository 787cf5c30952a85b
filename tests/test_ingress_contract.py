"""SPEC §3 row by row: each response's status, code and headers, against the real
ingress, broker and database; plus the incoming request log."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from happ_common.signing import happ_signature
from tests.conftest import System, eventually


@pytest.fixture
async def channel(system: System) -> dict[str, Any]:
    return await system.create_channel("/contract")


def _error(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    error: dict[str, Any] = resp.json()["error"]
    assert error["code"] == code
    assert error["message"].endswith("."), "the message is one sentence telling what to fix"
    return error


async def test_200_accepted_carries_message_and_channel_ids(
    system: System, channel: dict[str, Any]
) -> None:
    resp = await system.send(channel["id"], {"sender_id": "u", "text": "hi", "message_id": "m-200"})
    assert resp.status_code == 200
    assert resp.json() == {"status": "accepted", "message_id": "m-200", "channel_id": channel["id"]}


async def test_200_duplicate_for_a_repeated_message_id_is_not_processed_again(
    system: System,
) -> None:
    channel = await system.create_channel("/dup")
    body = {"sender_id": "dup-user", "text": "only once", "message_id": "m-dup"}
    first = await system.send(channel["id"], body)
    assert first.json()["status"] == "accepted"
    again = await system.send(channel["id"], body)
    assert again.status_code == 200
    assert again.json() == {"status": "duplicate", "message_id": "m-dup"}
    # Same key through the header, different body: still the same message.
    header = await system.send(
        channel["id"],
        {"sender_id": "dup-user", "text": "other"},
        headers={"Idempotency-Key": "m-dup"},
    )
    assert header.json() == {"status": "duplicate", "message_id": "m-dup"}
    # The same id on another channel is another message.
    other = await system.create_channel("/dup-other")
    assert (await system.send(other["id"], body)).json()["status"] == "accepted"

    await system.receiver.wait_for("/dup", 1)
    await asyncio.sleep(1.0)
    assert len(system.receiver.on_path("/dup")) == 1


async def test_racing_repeats_yield_exactly_one_accepted(system: System) -> None:
    channel = await system.create_channel("/race")
    body = {"sender_id": "racer", "text": "race", "message_id": "m-race"}
    results = await asyncio.gather(*(system.send(channel["id"], body) for _ in range(8)))
    statuses = sorted(r.json()["status"] for r in results)
    assert all(r.status_code == 200 for r in results), [r.text for r in results]
    assert statuses == ["accepted"] + ["duplicate"] * 7
    assert {r.json()["message_id"] for r in results} == {"m-race"}


async def test_401_hmac_mismatch_and_required(system: System) -> None:
    channel = await system.create_channel("/sig", require_signature=True)
    body = json.dumps({"sender_id": "u", "text": "x"}).encode()
    url = system.url("ingress", f"/webhook/{channel['id']}")
    ct = {"Content-Type": "application/json"}
    _error(await system.http.post(url, content=body, headers=ct), 401, "HMAC_REQUIRED")
    bad = {**ct, "X-HAPP-Signature": "sha256=" + "0" * 64}
    _error(await system.http.post(url, content=body, headers=bad), 401, "HMAC_MISMATCH")
    # Signed over other bytes (e.g. re-serialised JSON) is a mismatch too.
    other = {**ct, "X-HAPP-Signature": happ_signature(channel["hmac_secret"], body + b"\n")}
    _error(await system.http.post(url, content=body, headers=other), 401, "HMAC_MISMATCH")


async def test_previous_secret_verifies_for_the_overlap_after_rotation(system: System) -> None:
    channel = await system.create_channel("/rotate")
    old = channel["hmac_secret"]
    rotated = (await system.admin.post(f"/api/channels/{channel['id']}/rotate-secret")).json()
    assert rotated["hmac_secret"] != old
    url = system.url("ingress", f"/webhook/{channel['id']}")
    body = b'{"sender_id": "u", "text": "rotated"}'

    async def both_verify() -> bool:
        ok = []
        for secret in (old, rotated["hmac_secret"]):
            r = await system.http.post(
                url,
                content=body,
                headers={
                    "Content-Type": "application/json",
                    "X-HAPP-Signature": happ_signature(secret, body),
                },
            )
            ok.append(r.status_code == 200)
        return all(ok)

    await eventually(both_verify, timeout_s=3)


async def test_403_disconnected(system: System) -> None:
    channel = await system.create_channel("/off")
    await system.admin.post(f"/api/channels/{channel['id']}/disconnect")

    async def refused() -> bool:
        r = await system.send(channel["id"], {"sender_id": "u", "text": "x"})
        return r.status_code == 403

    await eventually(refused, timeout_s=2.5)
    _error(
        await system.send(channel["id"], {"sender_id": "u", "text": "x"}),
        403,
        "CHANNEL_DISCONNECTED",
    )


@pytest.mark.parametrize("channel_id", ["cm_nosuchchannel000", "not-a-channel-id", "cm_"])
async def test_404_unknown_channel(system: System, channel_id: str) -> None:
    _error(await system.send(channel_id, {"sender_id": "u", "text": "x"}), 404, "CHANNEL_NOT_FOUND")


async def test_413_by_declared_length_and_by_streamed_size(
    system: System, channel: dict[str, Any]
) -> None:
    url = system.url("ingress", f"/webhook/{channel['id']}")
    big = b'{"sender_id":"u","text":"' + b"x" * (256 * 1024) + b'"}'
    _error(
        await system.http.post(url, content=big, headers={"Content-Type": "application/json"}),
        413,
        "PAYLOAD_TOO_LARGE",
    )

    async def chunks() -> Any:  # no Content-Length: chunked transfer
        for _ in range(40):
            yield b"x" * 8192

    _error(
        await system.http.post(url, content=chunks(), headers={"Content-Type": "application/json"}),
        413,
        "PAYLOAD_TOO_LARGE",
    )

    async def both_logged() -> bool:
        entries = await system.log(channel["id"], direction="incoming")
        refused = [e for e in entries if e["error_code"] == "PAYLOAD_TOO_LARGE"]
        return [e["status_code"] for e in refused] == [413, 413]

    await eventually(both_logged, timeout_s=5)


INVALID: list[tuple[str, Any, str | None]] = [
    ("missing sender_id", {"text": "x"}, "sender_id"),
    ("missing text", {"sender_id": "u"}, "text"),
    ("empty sender_id", {"sender_id": "", "text": "x"}, "sender_id"),
    ("sender_id too long", {"sender_id": "u" * 257, "text": "x"}, "sender_id"),
    ("sender_id not a string", {"sender_id": 42, "text": "x"}, "sender_id"),
    ("text too long", {"sender_id": "u", "text": "x" * 10_001}, "text"),
    ("empty text without attachments", {"sender_id": "u", "text": ""}, None),
    (
        "sender_name too long",
        {"sender_id": "u", "text": "x", "sender_name": "n" * 257},
        "sender_name",
    ),
    ("metadata not an object", {"sender_id": "u", "text": "x", "metadata": [1]}, "metadata"),
    (
        "metadata over 16 KiB",
        {"sender_id": "u", "text": "x", "metadata": {"k": "v" * 17_000}},
        "metadata",
    ),
    (
        "too many attachments",
        {
            "sender_id": "u",
            "text": "x",
            "attachments": [{"type": "file", "url": "https://a.b/c"}] * 11,
        },
        "attachments",
    ),
    (
        "attachment bad type",
        {"sender_id": "u", "text": "x", "attachments": [{"type": "video", "url": "https://a.b/c"}]},
        "attachments.0.type",
    ),
    (
        "attachment relative url",
        {"sender_id": "u", "text": "x", "attachments": [{"type": "image", "url": "/c.png"}]},
        "attachments.0.url",
    ),
    (
        "attachment ftp url",
        {
            "sender_id": "u",
            "text": "x",
            "attachments": [{"type": "image", "url": "ftp://a.b/c.png"}],
        },
        "attachments.0.url",
    ),
    (
        "attachment url too long",
        {
            "sender_id": "u",
            "text": "x",
            "attachments": [{"type": "image", "url": "https://a.b/" + "c" * 2048}],
        },
        "attachments.0.url",
    ),
    ("message_id too long", {"sender_id": "u", "text": "x", "message_id": "m" * 129}, "message_id"),
    (
        "metadata key with NUL (no database can store it)",
        {"sender_id": "u", "text": "x", "metadata": {"a": [{"b\u0000c": 1}]}},
        "metadata",
    ),
    (
        "metadata integer beyond 64 bits (no database can store it)",
        {"sender_id": "u", "text": "x", "metadata": {"n": [2**63]}},
        "metadata",
    ),
]


@pytest.mark.parametrize(("case", "body", "field"), INVALID, ids=[c[0] for c in INVALID])
async def test_422_invalid_fields_name_the_field(
    system: System, channel: dict[str, Any], case: str, body: Any, field: str | None
) -> None:
    error = _error(await system.send(channel["id"], body), 422, "INVALID_PAYLOAD")
    if field is not None:
        assert field in {d["field"] for d in error["details"]}, error


@pytest.mark.parametrize("key", ["k" * 129, ""], ids=["too long", "empty"])
async def test_422_an_idempotency_key_header_is_held_to_message_id_rules(
    system: System, channel: dict[str, Any], key: str
) -> None:
    resp = await system.send(
        channel["id"], {"sender_id": "u", "text": "x"}, headers={"Idempotency-Key": key}
    )
    error = _error(resp, 422, "INVALID_PAYLOAD")
    assert "Idempotency-Key" in {d["field"] for d in error["details"]}, error


async def test_keys_sharing_their_first_128_characters_do_not_collide(
    system: System, channel: dict[str, Any]
) -> None:
    prefix = "p" * 128
    body = {"sender_id": "u", "text": "x"}
    first = await system.send(channel["id"], body, headers={"Idempotency-Key": prefix})
    assert first.json() == {"status": "accepted", "message_id": prefix, "channel_id": channel["id"]}
    longer = await system.send(channel["id"], body, headers={"Idempotency-Key": prefix + "q"})
    _error(longer, 422, "INVALID_PAYLOAD")


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"not json", "application/json"),
        (b"[1, 2]", "application/json"),
        (b'"a string"', "application/json"),
        (b'{"sender_id": "u", "text": "x"}', "text/plain"),
        (b'{"sender_id": "u", "text": "x"}', None),
        (b"", "application/json"),
    ],
)
async def test_422_not_json_not_an_object_or_wrong_content_type(
    system: System, channel: dict[str, Any], content: bytes, content_type: str | None
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    resp = await system.http.post(
        system.url("ingress", f"/webhook/{channel['id']}"), content=content, headers=headers
    )
    _error(resp, 422, "INVALID_PAYLOAD")


async def test_empty_text_is_fine_with_attachments_and_charset_is_fine(
    system: System, channel: dict[str, Any]
) -> None:
    resp = await system.http.post(
        system.url("ingress", f"/webhook/{channel['id']}"),
        content=json.dumps(
            {
                "sender_id": "u",
                "text": "",
                "attachments": [{"type": "image", "url": "https://x.y/a.png"}],
            }
        ).encode(),
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert resp.status_code == 200, resp.text


async def test_429_over_the_channel_limit_with_retry_after(system: System) -> None:
    channel = await system.create_channel("/limited", rate_limit_per_second=2)
    results = [
        await system.send(channel["id"], {"sender_id": "u", "text": f"{i}"}) for i in range(6)
    ]
    statuses = [r.status_code for r in results]
    assert statuses[:2] == [200, 200]
    limited = [r for r in results if r.status_code == 429]
    assert limited, statuses
    _error(limited[0], 429, "RATE_LIMITED")
    assert int(limited[0].headers["Retry-After"]) >= 1
    await asyncio.sleep(1.1)
    assert (
        await system.send(channel["id"], {"sender_id": "u", "text": "later"})
    ).status_code == 200


async def test_request_log_records_accepted_and_rejected_requests_without_signatures(
    system: System,
) -> None:
    channel = await system.create_channel("/logged")
    body = b'{"sender_id": "u", "text": "log me"}'
    url = system.url("ingress", f"/webhook/{channel['id']}")
    signature = happ_signature(channel["hmac_secret"], body)
    ok = await system.http.post(
        url,
        content=body,
        headers={"Content-Type": "application/json", "X-HAPP-Signature": signature},
    )
    assert ok.status_code == 200
    bad = await system.http.post(
        url, content=b"{broken", headers={"Content-Type": "application/json"}
    )
    assert bad.status_code == 422

    incoming = {"channel_id": channel["id"], "direction": "incoming"}

    async def logged() -> bool:
        return await system.db.request_log.count_documents(incoming) >= 2

    await eventually(logged, timeout_s=5)
    entries = await system.db.request_log.find(incoming).sort("created_at", 1).to_list(None)
    accepted, rejected = entries
    assert accepted["direction"] == "incoming"
    assert accepted["status_code"] == 200 and accepted["error_code"] is None
    assert accepted["message_id"] == ok.json()["message_id"]
    assert accepted["request_body"] == body.decode()
    assert accepted["url"] == f"/webhook/{channel['id']}"
    assert accepted["duration_ms"] >= 0
    assert rejected["status_code"] == 422 and rejected["error_code"] == "INVALID_PAYLOAD"
    assert rejected["request_body"] == "{broken"
    dumped = json.dumps(entries, default=str)
    assert signature.removeprefix("sha256=") not in dumped
    assert channel["hmac_secret"] not in dumped
