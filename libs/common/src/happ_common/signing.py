"""Request signatures: HAPP's own ``X-HAPP-Signature`` and Standard Webhooks.

``X-HAPP-Signature`` is ``sha256=`` + hex HMAC-SHA256 keyed with the secret's
UTF-8 bytes, over the raw body (SPEC §4). ``webhook-signature`` follows the
Standard Webhooks scheme: the key is the base64 part of ``whsec_...`` decoded,
the message is ``{id}.{timestamp}.{body}``, and each valid secret contributes
one ``v1,<base64>`` entry, space separated.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Sequence

SIGNATURE_PREFIX = "sha256="


def happ_signature(secret: str, body: bytes) -> str:
    return SIGNATURE_PREFIX + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_happ_signature(secrets: Iterable[str], body: bytes, header: str) -> bool:
    """True when ``header`` is the signature of ``body`` under any of ``secrets``.

    Every secret is checked, with a constant-time comparison, so the time taken
    does not tell which secret (if any) came close.
    """
    # Hex is case-insensitive: .NET's Convert.ToHexString, for one, writes upper case.
    candidate = header.strip().lower().encode()
    ok = False
    for secret in secrets:
        expected = happ_signature(secret, body).encode()
        ok |= hmac.compare_digest(expected, candidate)
    return ok


def _standard_key(secret: str) -> bytes:
    raw = secret.removeprefix("whsec_")
    return base64.b64decode(raw)


def standard_webhook_signature(
    secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes
) -> str:
    to_sign = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1,"
        + base64.b64encode(hmac.new(_standard_key(s), to_sign, hashlib.sha256).digest()).decode()
        for s in secrets
    )


# What each header of an outgoing reply means (the ingress OpenAPI document's
# ``webhooks`` section); the keys are exactly those ``outgoing_headers`` sends.
OUTGOING_HEADER_DOCS = {
    "Content-Type": "`application/json`.",
    "User-Agent": "`HAPP-Custom-Messenger/1.0`.",
    "X-HAPP-Signature": "`sha256=<hex HMAC-SHA256 of the raw body, keyed with the UTF-8 bytes "
    "of the channel's secret>`. Compare in constant time.",
    "X-HAPP-Delivery-Id": "The reply's `message_id`: the same on every attempt, so a receiver "
    "can drop repeats.",
    "X-HAPP-Attempt": "This attempt's number: 1, then 2 to 4 for the retries (by default). "
    "An attempt answered 429 or 503 with `Retry-After` pauses the channel and does not count "
    "against the limit, so numbers may go higher.",
    "X-HAPP-Timestamp": "Unix seconds when this attempt was signed (also `timestamp` in the body).",
    "webhook-id": "Standard Webhooks: the same as `X-HAPP-Delivery-Id`.",
    "webhook-timestamp": "Standard Webhooks: the same as `X-HAPP-Timestamp`.",
    "webhook-signature": "Standard Webhooks: `v1,<base64 HMAC-SHA256 of "
    "'{webhook-id}.{webhook-timestamp}.{body}' keyed with the base64-decoded part of the "
    "whsec_ secret>`; during the 24 h after a rotation one such entry per valid secret, "
    "space separated.",
}


def outgoing_headers(
    *,
    current_secret: str,
    extra_secrets: Sequence[str],
    delivery_id: str,
    timestamp: int,
    attempt: int,
    body: bytes,
) -> dict[str, str]:
    """Every header of an outgoing reply (SPEC §4), for one attempt."""
    return {
        "Content-Type": "application/json",
        "User-Agent": "HAPP-Custom-Messenger/1.0",
        "X-HAPP-Signature": happ_signature(current_secret, body),
        "X-HAPP-Delivery-Id": delivery_id,
        "X-HAPP-Attempt": str(attempt),
        "X-HAPP-Timestamp": str(timestamp),
        "webhook-id": delivery_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": standard_webhook_signature(
            [current_secret, *extra_secrets], delivery_id, timestamp, body
        ),
    }
