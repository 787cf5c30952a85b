"""HAPP Custom Messenger: verify the requests HAPP POSTs to your endpoint, and
sign the messages you POST to its webhook. Standard library only, Python 3.9+.

Verify the body's exact bytes, before parsing them (Flask: request.get_data(),
Django: request.body, FastAPI/Starlette: await request.body()); each check
returns the parsed reply once it is authentic, and raises InvalidSignature
(answer 401) otherwise:

    reply = verify_standard_webhook(body, request.headers, [SECRET])
    reply = verify_happ_signature(body, request.headers, [SECRET])  # or this one

During a secret rotation pass both secrets: either may match.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

# Each attempt is signed as it is sent, so a genuine request is seconds old;
# anything further from now, either way, is a replay.
TOLERANCE_S = 5 * 60


class InvalidSignature(Exception):
    """Not from HAPP, or not recent: answer 401."""


def sign_request(secret: str, body: bytes) -> str:
    """X-HAPP-Signature for a message you POST to /webhook/{channel_id}: the key
    is the whole secret string, whsec_ included, as UTF-8."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_happ_signature(
    body: bytes, headers: Mapping[str, str], secrets: Iterable[str]
) -> dict[str, Any]:
    """X-HAPP-Signature: sha256=<hex HMAC-SHA256 of the body, keyed as in sign_request>."""
    given = _header(headers, "X-HAPP-Signature").strip().encode()
    if not _any_match([sign_request(s, body).encode() for s in secrets], [given]):
        raise InvalidSignature("X-HAPP-Signature does not match")
    reply = _parse(body)
    # This signature covers the body alone: only the body's timestamp is
    # authentic, not the X-HAPP-Timestamp header.
    _check_timestamp(reply.get("timestamp"))
    return reply


def verify_standard_webhook(
    body: bytes, headers: Mapping[str, str], secrets: Iterable[str]
) -> dict[str, Any]:
    """webhook-signature: one "v1,<base64 HMAC-SHA256>" per secret HAPP signs with,
    space separated, over "{webhook-id}.{webhook-timestamp}.{body}", keyed with
    the base64-decoded part of whsec_..."""
    msg_id = _header(headers, "webhook-id")
    timestamp = _header(headers, "webhook-timestamp")
    signed = f"{msg_id}.{timestamp}.".encode() + body
    expected = [
        base64.b64encode(hmac.new(_key(s), signed, hashlib.sha256).digest()) for s in secrets
    ]
    given = [
        entry[3:].encode()
        for entry in _header(headers, "webhook-signature").split()
        if entry.startswith("v1,")
    ]
    if not _any_match(expected, given):
        raise InvalidSignature("webhook-signature does not match")
    _check_timestamp(int(timestamp) if timestamp.isascii() and timestamp.isdigit() else None)
    return _parse(body)


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix("whsec_"), validate=True)


def _any_match(expected: list[bytes], given: list[bytes]) -> bool:
    # Every pair is compared, in constant time, so timing tells nothing about
    # which secret or signature came close.
    found = False
    for e in expected:
        for g in given:
            found |= hmac.compare_digest(e, g)
    return found


def _check_timestamp(timestamp: object) -> None:
    if not isinstance(timestamp, int) or isinstance(timestamp, bool):
        raise InvalidSignature("the request has no timestamp")
    if abs(time.time() - timestamp) > TOLERANCE_S:
        raise InvalidSignature(f"timestamp {timestamp} is more than {TOLERANCE_S} s from now")


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None:  # a plain dict is case-sensitive; HTTP header names are not
        value = next((v for k, v in headers.items() if k.lower() == name.lower()), None)
    if value is None:
        raise InvalidSignature(f"no {name} header")
    return value


def _parse(body: bytes) -> dict[str, Any]:
    reply = json.loads(body)
    if not isinstance(reply, dict):
        raise InvalidSignature("the body is not a JSON object")
    return reply


if __name__ == "__main__":
    # Check a request you saved, or sign a body, from the command line:
    #   HAPP_SECRET=whsec_... python verify.py standard|happ body.json headers.json
    #   HAPP_SECRET=whsec_... python verify.py sign body.json
    # headers.json is {"webhook-id": "...", ...}; separate several secrets with commas.
    keys = os.environ["HAPP_SECRET"].split(",")
    command, body_file, *rest = sys.argv[1:]
    raw = Path(body_file).read_bytes()
    if command == "sign":
        print(sign_request(keys[0], raw))
        sys.exit(0)
    request_headers = json.loads(Path(rest[0]).read_text(encoding="utf-8"))
    verify = {"happ": verify_happ_signature, "standard": verify_standard_webhook}[command]
    try:
        print("ok", verify(raw, request_headers, keys)["message_id"])
    except InvalidSignature as exc:
        sys.exit(f"rejected: {exc}")
