"""Property-based: whatever the body, headers and content type, the webhook never
answers a 5xx other than 503, and never a 200 to a request the contract calls
invalid. The oracle below restates SPEC §3 independently of the service's code."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import System

json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
urls = st.sampled_from(
    ["https://x.y/a.png", "http://x.y/f.pdf", "/rel.png", "ftp://x/y", "", "https://" + "a" * 2050]
)
attachments = st.fixed_dictionaries(
    {"type": st.sampled_from(["image", "file", "audio", "video", 3]), "url": urls},
    optional={"name": st.text(max_size=10) | st.integers(), "mime_type": st.text(max_size=10)},
)
field_values: dict[str, st.SearchStrategy[Any]] = {
    "sender_id": st.text(max_size=300) | json_values,
    "text": st.text(max_size=50) | st.just("t" * 10_001) | json_values,
    "sender_name": st.text(max_size=300) | json_values,
    "metadata": st.dictionaries(st.text(max_size=5), json_values, max_size=3) | json_values,
    "attachments": st.lists(attachments, max_size=12) | json_values,
    "message_id": st.text(min_size=0, max_size=140) | json_values,
    "extra": json_values,
}
bodies = st.fixed_dictionaries({}, optional=field_values)
# Mostly valid bodies, so the 200 side of the property is exercised as well.
near_valid = st.fixed_dictionaries(
    {"sender_id": st.text(min_size=1, max_size=40), "text": st.text(max_size=40)},
    optional={k: v for k, v in field_values.items() if k not in ("sender_id", "text")},
)
raw_bodies = st.one_of(
    bodies.map(lambda b: json.dumps(b).encode()),
    near_valid.map(lambda b: json.dumps(b).encode()),
    near_valid.map(lambda b: json.dumps(b).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=64),
)
content_types = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "text/plain",
        "application/xml",
        None,
        "APPLICATION/JSON",
    ]
)


def _valid_attachment(a: Any) -> bool:
    if not isinstance(a, dict) or a.get("type") not in ("image", "file", "audio"):
        return False
    url = a.get("url")
    if not isinstance(url, str) or len(url) > 2048:
        return False
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    return all(a.get(k) is None or isinstance(a.get(k), str) for k in ("name", "mime_type"))


def spec_valid(raw: bytes, content_type: str | None) -> bool:
    if (content_type or "").split(";")[0].strip().lower() != "application/json":
        return False
    try:
        body = json.loads(raw)
    except ValueError:
        return False
    if not isinstance(body, dict):
        return False
    sender, text = body.get("sender_id"), body.get("text")
    if not isinstance(sender, str) or not 1 <= len(sender) <= 256:
        return False
    if not isinstance(text, str) or len(text) > 10_000:
        return False
    atts = body.get("attachments", [])
    if atts is None:
        atts = []
    if not isinstance(atts, list) or len(atts) > 10 or not all(_valid_attachment(a) for a in atts):
        return False
    if text == "" and not atts:
        return False
    name = body.get("sender_name")
    if name is not None and (not isinstance(name, str) or len(name) > 256):
        return False
    meta = body.get("metadata")
    if meta is not None and (
        not isinstance(meta, dict)
        or len(json.dumps(meta, separators=(",", ":"), ensure_ascii=False).encode()) > 16 * 1024
        or any("\x00" in k for k in _keys(meta))
        or not all(-(2**63) <= n < 2**63 for n in _ints(meta))
    ):
        return False
    mid = body.get("message_id")
    return mid is None or (isinstance(mid, str) and 1 <= len(mid) <= 128)


def _keys(value: object) -> Iterator[str]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _keys(v)
    elif isinstance(value, list):
        for v in value:
            yield from _keys(v)


def _ints(value: object) -> Iterator[int]:
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _ints(v)
    elif isinstance(value, list):
        for v in value:
            yield from _ints(v)


async def test_no_5xx_but_503_and_no_200_for_invalid_requests(system: System) -> None:
    channel = await system.create_channel("/props", rate_limit_per_second=100_000)
    url = system.url("ingress", f"/webhook/{channel['id']}")
    seen: dict[int, int] = {}

    # Hypothesis drives a synchronous test; it runs in a thread so the session's
    # event loop (fake LLM, HTTPS receiver) keeps serving meanwhile.
    def run() -> None:
        with httpx.Client(timeout=10) as http:

            @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
            @given(raw=raw_bodies, content_type=content_types)
            def check(raw: bytes, content_type: str | None) -> None:
                headers = {"Content-Type": content_type} if content_type else {}
                resp = http.post(url, content=raw, headers=headers)
                seen[resp.status_code] = seen.get(resp.status_code, 0) + 1
                assert resp.status_code < 500 or resp.status_code == 503, resp.text
                valid = spec_valid(raw, content_type)
                if resp.status_code == 200:
                    assert valid, (raw, content_type, resp.text)
                    assert resp.json()["status"] in ("accepted", "duplicate")
                elif resp.status_code == 422:
                    assert not valid, (raw, content_type, resp.text)
                    assert resp.json()["error"]["code"] == "INVALID_PAYLOAD"

            check()

    await asyncio.to_thread(run)
    assert seen.get(200, 0) > 0 and seen.get(422, 0) > 0, seen
