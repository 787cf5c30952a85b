"""The OpenAPI documents tell the truth (issue #12).

schemathesis (``--checks all``) runs against the session's admin and ingress
services through ``happ_devtools.openapi_check``, the same check ``make
openapi-check`` runs, here with a bounded number of examples and a fixed seed;
the fast tests below pin what the documents are generated from.
"""

from __future__ import annotations

import asyncio
import re
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from happ_admin.cursors import CURSOR_PATTERN, decode, encode
from happ_common.errors import METHOD_NOT_ALLOWED
from happ_common.signing import OUTGOING_HEADER_DOCS, outgoing_headers
from happ_devtools.openapi_check import check, config_text
from happ_devtools.schemathesis_hooks import rules_hold
from happ_ingress.app import create_app as create_ingress
from happ_ingress.errors import REPLIES_ERRORS, WEBHOOK_ERRORS
from tests.conftest import ADMIN_TOKEN, System

# Per operation in the fuzzing phase (the coverage phase's cases are fixed):
# enough to find what the first run found (schema-valid requests refused over
# the cursor, the outgoing URL or working hours; undocumented 400s; 405s without
# Allow), few enough for CI. `make openapi-check` runs the full 100.
MAX_EXAMPLES = 5
SEED = 12


@pytest.mark.timeout(600)
async def test_schemathesis_finds_no_failure_in_either_document(
    system: System, tmp_path: Path
) -> None:
    results = await asyncio.to_thread(
        check,
        admin_url=system.url("admin"),
        ingress_url=system.url("ingress"),
        token=ADMIN_TOKEN,
        outgoing_url=system.endpoint("/openapi-check"),
        st_args=[
            "--max-examples",
            str(MAX_EXAMPLES),
            "--seed",
            str(SEED),
            "--generation-database",
            "none",
        ],
        capture=True,
        cwd=tmp_path,
    )
    for result in results:
        assert result.returncode == 0, f"{result.service}:\n{result.output[-20_000:]}"
    assert [r.service for r in results] == ["admin", "ingress"]


async def test_a_method_a_path_lacks_is_405_with_allow(system: System) -> None:
    admin = await system.admin.request("TRACE", "/api/channels")
    assert admin.status_code == 405
    assert admin.headers["Allow"] == "GET, POST"
    assert admin.json()["error"]["code"] == METHOD_NOT_ALLOWED.code
    one = await system.admin.request("PUT", "/api/channels/cm_doesnotexist0000")
    assert (one.status_code, one.headers["Allow"]) == (405, "GET, PATCH")
    webhook = await system.http.get(system.url("ingress", "/webhook/cm_doesnotexist0000"))
    assert (webhook.status_code, webhook.headers["Allow"]) == (405, "POST")


async def test_an_unreadable_body_is_422_not_an_undocumented_400(system: System) -> None:
    channel = await system.create_channel("/openapi-400")
    resp = await system.admin.patch(
        f"/api/channels/{channel['id']}",
        content=b"\xff\xfe{",
        headers={"Content-Type": "application/json"},
    )
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["code"] == "INVALID_PAYLOAD"


def _responses(doc: dict[str, Any], path: str) -> dict[str, Any]:
    responses: dict[str, Any] = doc["paths"][path]["post"]["responses"]
    return responses


def _codes(doc: dict[str, Any], response: dict[str, Any]) -> list[str]:
    name = response["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    info = doc["components"]["schemas"][f"{name}Info"]
    code = info["properties"]["code"]
    codes: list[str] = code["enum"] if "enum" in code else [code["const"]]
    return codes


def test_the_webhook_errors_are_generated_from_the_kinds_it_raises() -> None:
    doc = create_ingress().openapi()
    for path in ("/webhook/{channel_id}", "/cm/{channel_id}"):
        responses = _responses(doc, path)
        documented = {
            (int(status), code)
            for status, response in responses.items()
            if status not in ("200", "202")  # 202: Prefer: wait ran out, not an error
            for code in _codes(doc, response)
        }
        assert documented == {(kind.status, kind.code) for kind in WEBHOOK_ERRORS}
        for status in ("429", "503"):
            assert responses[status]["headers"]["Retry-After"]["required"] is True
    replies = doc["paths"]["/webhook/{channel_id}/replies"]["get"]["responses"]
    documented = {
        (int(status), code)
        for status, response in replies.items()
        if status != "200"
        for code in _codes(doc, response)
    }
    assert documented == {(kind.status, kind.code) for kind in REPLIES_ERRORS}


def test_the_outgoing_reply_is_an_openapi_webhook_with_its_real_body_and_headers() -> None:
    doc = create_ingress().openapi()
    reply = doc["webhooks"]["reply"]["post"]
    body = reply["requestBody"]["content"]["application/json"]["schema"]
    assert body["$ref"].endswith("/OutgoingBody")
    outgoing = doc["components"]["schemas"]["OutgoingBody"]
    assert {"to", "text", "metadata", "message_id", "timestamp", "author"} <= set(
        outgoing["required"]
    )
    sent = outgoing_headers(
        current_secret="whsec_" + "A" * 43 + "=",
        extra_secrets=[],
        delivery_id="rpl_1",
        timestamp=1,
        attempt=1,
        body=b"{}",
    )
    assert set(sent) == set(OUTGOING_HEADER_DOCS)
    headers = {p["name"] for p in reply["parameters"] if p["in"] == "header"}
    assert headers == set(sent) - {"Content-Type"}


def _stray_keywords(node: object, where: str = "") -> list[str]:
    """pydantic keywords left untranslated in a JSON schema (``ge`` beside ``type``):
    a validator ignores them, so the bound they carry would be documented nowhere."""
    found: list[str] = []
    if isinstance(node, dict):
        if "type" in node:
            found += [f"{where}.{k}" for k in ("ge", "le", "gt", "lt", "max_length") if k in node]
        for key, value in node.items():
            found += _stray_keywords(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _stray_keywords(value, f"{where}[{i}]")
    return found


async def test_both_documents_state_their_bounds_in_json_schema(system: System) -> None:
    for service in ("admin", "ingress"):
        doc = (await system.http.get(system.url(service, "/openapi.json"))).json()
        assert _stray_keywords(doc) == [], service


def test_a_parameter_with_no_prepared_value_gets_no_dictionary() -> None:
    # schemathesis refuses to load a config with an empty dictionary: a
    # request log not yet written must not fail the whole check.
    config = tomllib.loads(config_text({"channel_id": ["cm_1"], "log_id": []}))
    assert config["dictionaries"] == {"channel_id": {"values": ["cm_1"]}}
    assert list(config["parameters"]) == ["path.channel_id"]


def test_cursors_round_trip_and_every_string_the_pattern_allows_is_one() -> None:
    at = datetime(2026, 12, 1, 9, 30, 0, 123000, tzinfo=UTC)
    cursor = encode(at, "cm_x:ü")
    assert re.fullmatch(CURSOR_PATTERN, cursor)
    assert decode(cursor) == (at, "cm_x:ü")
    assert decode("0.") == (datetime(1970, 1, 1, tzinfo=UTC), "")
    assert decode("9999999999999999.ff") is not None  # not UTF-8: still a position


def test_the_hooks_state_only_the_rules_a_schema_cannot() -> None:
    interval = {"days": ["mon"], "start": "18:00", "end": "09:00"}
    assert not rules_hold({"working_hours": {"timezone": "UTC", "intervals": [interval]}})
    assert not rules_hold({"routes": [{"match": "regex", "pattern": "("}]})
    assert not rules_hold({"sender_id": "u", "text": "x", "metadata": {"n": 2**64}})
    assert rules_hold({"routes": [{"match": "keyword", "pattern": "("}], "name": ""})
    assert not rules_hold({"name": "no endpoint"}, "POST", "/api/channels")
    assert rules_hold({"name": "n", "delivery": "response"}, "POST", "/api/channels")
    assert not rules_hold({"outgoing_url": ""}, "PATCH", "/api/channels/{channel_id}")
    assert rules_hold({"name": "renamed"}, "PATCH", "/api/channels/{channel_id}")
