"""The integrator's guide's code (``docs/snippets``), run the way an integrator
runs it, against requests the running system really sent and received.

The guide shows each snippet file verbatim (checked here), so what is tested is
what integrators copy. The Python and Node.js verifiers must accept a reply the
delivery service POSTed, byte for byte, and reject it with one byte changed,
under a wrong secret, or signed too long ago; the signers' output must be what
the webhook accepts. Go and PHP are not on the machines that run this suite.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from happ_common.ids import new_channel_secret
from happ_common.signing import outgoing_headers, verify_happ_signature
from tests.conftest import System

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "integrate.md"
SNIPPETS = ROOT / "docs" / "snippets"
VERIFIERS = {
    "python": [sys.executable, str(SNIPPETS / "verify.py")],
    "node": ["node", str(SNIPPETS / "verify.js")],
}
SCHEMES = ("happ", "standard")
TOLERANCE_S = 300  # what every snippet allows, and the Standard Webhooks libraries too
FENCE_LANGUAGE = {".py": "python", ".js": "javascript", ".go": "go", ".php": "php", ".sh": "bash"}

EACH_LANGUAGE = pytest.mark.parametrize("lang", list(VERIFIERS))


@dataclass(frozen=True)
class Request:
    body: bytes
    headers: dict[str, str]
    secret: str
    previous_secret: str | None = None

    @property
    def message_id(self) -> str:
        value = json.loads(self.body)["message_id"]
        assert isinstance(value, str)
        return value


@dataclass(frozen=True)
class Outcome:
    returncode: int
    stdout: str
    stderr: str

    @property
    def accepted(self) -> bool:
        return self.returncode == 0 and self.stdout.startswith("ok ")

    @property
    def rejected(self) -> bool:
        # Exit 1 alone would also be a crash (an uncaught exception): a rejection
        # is the verifier saying so.
        return self.returncode == 1 and self.stderr.startswith("rejected: ")


async def run(lang: str, *args: str, secrets: list[str], stdin: bytes | None = None) -> Outcome:
    proc = await asyncio.create_subprocess_exec(
        *VERIFIERS[lang],
        *args,
        env={**os.environ, "HAPP_SECRET": ",".join(secrets)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), 30)
    assert proc.returncode is not None
    return Outcome(proc.returncode, out.decode(), err.decode())


def write(folder: str, name: str, content: bytes) -> str:
    path = Path(folder, name)
    path.write_bytes(content)
    return str(path)


async def verify(
    lang: str, scheme: str, body: bytes, headers: dict[str, str], secrets: list[str]
) -> Outcome:
    with tempfile.TemporaryDirectory() as folder:
        body_file = write(folder, "body.json", body)
        headers_file = write(folder, "headers.json", json.dumps(headers).encode())
        return await run(lang, scheme, body_file, headers_file, secrets=secrets)


def assert_accepted(outcome: Outcome, message_id: str) -> None:
    assert outcome.accepted, outcome
    assert outcome.stdout.split() == ["ok", message_id]


def assert_rejected(outcome: Outcome, because: str) -> None:
    assert outcome.rejected, outcome
    assert because in outcome.stderr, outcome


async def capture(system: System, path: str, rotate: bool) -> Request:
    """A reply as the TLS receiver got it from the delivery service."""
    channel = await system.create_channel(path)
    secret, previous = channel["hmac_secret"], None
    if rotate:
        resp = await system.admin.post(f"/api/channels/{channel['id']}/rotate-secret")
        assert resp.status_code == 200, resp.text
        secret, previous = resp.json()["hmac_secret"], secret
    sent = await system.send(
        channel["id"],
        # Non-ASCII text travels as raw UTF-8 in the reply: a verifier that
        # re-encodes the body instead of using its bytes fails on it.
        {"sender_id": "user_42", "text": 'Привіт 👋 "quoted"', "metadata": {"city": "Київ"}},
    )
    assert sent.status_code == 200, sent.text
    (got,) = await system.receiver.wait_for(path, 1)
    assert not got.body.isascii()
    return Request(got.body, got.headers, secret, previous)


@pytest_asyncio.fixture(scope="module")
async def reply(system: System) -> Request:
    return await capture(system, "/integrate-snippets", rotate=False)


@pytest_asyncio.fixture(scope="module")
async def rotated_reply(system: System) -> Request:
    got = await capture(system, "/integrate-snippets-rotated", rotate=True)
    # The delivery signed with both secrets; a channel cache that missed the
    # rotation would have signed with one.
    assert len(got.headers["webhook-signature"].split()) == 2
    return got


def signed_at(request: Request, timestamp: int) -> Request:
    """The same reply as if its attempt had been sent at ``timestamp``, signed by
    the system's own code: only the time differs, so only the time can be wrong."""
    old = json.loads(request.body)["timestamp"]
    body = request.body.replace(
        f'"timestamp":{old},'.encode(), f'"timestamp":{timestamp},'.encode()
    )
    assert body != request.body
    headers = outgoing_headers(
        current_secret=request.secret,
        extra_secrets=[],
        delivery_id=request.headers["X-HAPP-Delivery-Id"],
        timestamp=timestamp,
        attempt=1,
        body=body,
    )
    return Request(body, headers, request.secret)


@EACH_LANGUAGE
@pytest.mark.parametrize("scheme", SCHEMES)
async def test_a_real_reply_is_accepted(lang: str, scheme: str, reply: Request) -> None:
    outcome = await verify(lang, scheme, reply.body, reply.headers, [reply.secret])
    assert_accepted(outcome, reply.message_id)


@EACH_LANGUAGE
@pytest.mark.parametrize("scheme", SCHEMES)
async def test_one_changed_byte_is_rejected(lang: str, scheme: str, reply: Request) -> None:
    at = reply.body.index(b"Echo")  # inside a string: still valid JSON, just not what was signed
    tampered = reply.body[:at] + b"F" + reply.body[at + 1 :]
    outcome = await verify(lang, scheme, tampered, reply.headers, [reply.secret])
    assert_rejected(outcome, "does not match")


@EACH_LANGUAGE
@pytest.mark.parametrize("scheme", SCHEMES)
async def test_a_wrong_secret_is_rejected(lang: str, scheme: str, reply: Request) -> None:
    outcome = await verify(lang, scheme, reply.body, reply.headers, [new_channel_secret()])
    assert_rejected(outcome, "does not match")


@EACH_LANGUAGE
@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("shift", [-(TOLERANCE_S + 60), TOLERANCE_S + 60])
async def test_a_timestamp_outside_the_tolerance_is_rejected(
    lang: str, scheme: str, shift: int, reply: Request
) -> None:
    late = signed_at(reply, int(time.time()) + shift)
    outcome = await verify(lang, scheme, late.body, late.headers, [late.secret])
    assert_rejected(outcome, "timestamp")


@EACH_LANGUAGE
@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("shift", [-(TOLERANCE_S - 60), TOLERANCE_S - 60])
async def test_a_timestamp_inside_the_tolerance_is_accepted(
    lang: str, scheme: str, shift: int, reply: Request
) -> None:
    # The counterpart of the test above: the re-signed request is genuine, so
    # there only its time is refused.
    shifted = signed_at(reply, int(time.time()) + shift)
    outcome = await verify(lang, scheme, shifted.body, shifted.headers, [shifted.secret])
    assert_accepted(outcome, reply.message_id)


@EACH_LANGUAGE
@pytest.mark.parametrize(("scheme", "header", "because"), [
    ("happ", "X-HAPP-Timestamp", "timestamp"),
    ("standard", "webhook-timestamp", "does not match"),
])  # fmt: skip
async def test_a_replay_with_a_fresh_timestamp_header_is_rejected(
    lang: str, scheme: str, header: str, because: str, reply: Request
) -> None:
    # X-HAPP-Timestamp is not signed, so the verifier must read the body's;
    # webhook-timestamp is signed, so changing it breaks the signature.
    old = signed_at(reply, int(time.time()) - TOLERANCE_S - 60)
    headers = {**old.headers, header: str(int(time.time()))}
    outcome = await verify(lang, scheme, old.body, headers, [old.secret])
    assert_rejected(outcome, because)


@EACH_LANGUAGE
@pytest.mark.parametrize(("scheme", "header"), [
    ("happ", "X-HAPP-Signature"),
    ("standard", "webhook-signature"),
    ("standard", "webhook-id"),
])  # fmt: skip
async def test_a_missing_header_is_rejected(
    lang: str, scheme: str, header: str, reply: Request
) -> None:
    headers = {k: v for k, v in reply.headers.items() if k.lower() != header.lower()}
    assert len(headers) == len(reply.headers) - 1
    outcome = await verify(lang, scheme, reply.body, headers, [reply.secret])
    assert_rejected(outcome, header)


@EACH_LANGUAGE
async def test_during_a_rotation_standard_webhooks_verifies_with_either_secret(
    lang: str, rotated_reply: Request
) -> None:
    assert rotated_reply.previous_secret is not None
    for secret in (rotated_reply.previous_secret, rotated_reply.secret):
        outcome = await verify(
            lang, "standard", rotated_reply.body, rotated_reply.headers, [secret]
        )
        assert_accepted(outcome, rotated_reply.message_id)


@EACH_LANGUAGE
async def test_during_a_rotation_x_happ_signature_needs_the_new_secret(
    lang: str, rotated_reply: Request
) -> None:
    old, new = rotated_reply.previous_secret, rotated_reply.secret
    assert old is not None
    body, headers = rotated_reply.body, rotated_reply.headers
    assert_rejected(await verify(lang, "happ", body, headers, [old]), "does not match")
    # The old secret first: a verifier that stops at the first secret fails here.
    assert_accepted(await verify(lang, "happ", body, headers, [old, new]), rotated_reply.message_id)


@EACH_LANGUAGE
async def test_a_signed_message_is_accepted_by_the_webhook(lang: str, system: System) -> None:
    channel = await system.create_channel("/integrate-signed", require_signature=True)
    secret = channel["hmac_secret"]
    body = json.dumps(
        {"sender_id": "user_7", "text": "Grüß Gott", "message_id": f"signed-{lang}"},
        ensure_ascii=False,
    ).encode()
    with tempfile.TemporaryDirectory() as folder:
        body_file = write(folder, "message.json", body)
        signed = await run(lang, "sign", body_file, secrets=[secret])
        wrong = await run(lang, "sign", body_file, secrets=[new_channel_secret()])
    assert signed.returncode == wrong.returncode == 0, (signed, wrong)
    signature = signed.stdout.strip()
    assert verify_happ_signature([secret], body, signature)
    url = system.url("ingress", f"/webhook/{channel['id']}")
    content_type = {"Content-Type": "application/json"}
    resp = await system.http.post(
        url, content=body, headers={**content_type, "X-HAPP-Signature": signature}
    )
    assert resp.status_code == 200, resp.text
    assert resp.json() == {
        "status": "accepted",
        "message_id": f"signed-{lang}",
        "channel_id": channel["id"],
    }
    resp = await system.http.post(
        url, content=body, headers={**content_type, "X-HAPP-Signature": wrong.stdout.strip()}
    )
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "HMAC_MISMATCH"


async def test_send_sh_sends_a_signed_message_once(system: System) -> None:
    channel = await system.create_channel("/integrate-send-sh", require_signature=True)
    # Newlines in the file: a curl that dropped them (-d) would send other bytes
    # than were signed, and the channel requires a signature.
    body = b'{\n  "sender_id": "user_9",\n  "text": "Hello from curl",\n  "message_id": "sh-1"\n}\n'
    with tempfile.TemporaryDirectory() as folder:
        message = write(folder, "message.json", body)

        async def send(secret: str) -> tuple[int, dict[str, Any]]:
            proc = await asyncio.create_subprocess_exec(
                "bash",
                str(SNIPPETS / "send.sh"),
                message,
                env={
                    **os.environ,
                    "HAPP_WEBHOOK_URL": system.url("ingress", f"/webhook/{channel['id']}"),
                    "HAPP_SECRET": secret,
                },
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == 0, err
            response, status = out.decode().rstrip("\n").rsplit("\n", 1)
            assert status.startswith("HTTP ")
            return int(status.removeprefix("HTTP ")), json.loads(response)

        assert await send(channel["hmac_secret"]) == (
            200,
            {"status": "accepted", "message_id": "sh-1", "channel_id": channel["id"]},
        )
        # The same message again: its message_id makes it a duplicate, not a second message.
        assert await send(channel["hmac_secret"]) == (
            200,
            {"status": "duplicate", "message_id": "sh-1"},
        )
        status, error = await send(new_channel_secret())
        assert status == 401
        assert error["error"]["code"] == "HMAC_MISMATCH"


def test_the_guide_shows_every_snippet_verbatim() -> None:
    guide = GUIDE.read_text(encoding="utf-8")
    shown = re.findall(r"<!-- snippet: (\S+) -->\n```(\w+)\n(.*?)^```$", guide, re.S | re.M)
    files = sorted(p.relative_to(ROOT).as_posix() for p in SNIPPETS.iterdir())
    assert sorted(path for path, _, _ in shown) == files
    for path, language, code in shown:
        assert language == FENCE_LANGUAGE[Path(path).suffix], path
        assert code == (ROOT / path).read_text(encoding="utf-8"), f"{path} differs from the guide"


def test_the_guides_example_request_is_signed_as_the_system_signs() -> None:
    guide = GUIDE.read_text(encoding="utf-8")
    match = re.search(
        r"<!-- example-request secret=(\S+) -->\n```http\n(.*?)\n\n(.*?)\n```", guide, re.S
    )
    assert match is not None
    secret, head, body_text = match.groups()
    body = body_text.encode()
    lines = head.split("\n")
    assert lines[0].startswith("POST ")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert headers.pop("Host")
    reply = json.loads(body)
    assert headers == outgoing_headers(
        current_secret=secret,
        extra_secrets=[],
        delivery_id=reply["message_id"],
        timestamp=reply["timestamp"],
        attempt=1,
        body=body,
    ) | {"Content-Length": str(len(body))}
