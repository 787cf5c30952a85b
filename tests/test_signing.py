"""Signatures, checked against a verifier nobody here wrote (``standardwebhooks``)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from happ_common.ids import new_channel_secret
from happ_common.signing import happ_signature, outgoing_headers, verify_happ_signature

BODY = b'{"to":"user_42","text":"Hi"}'


def test_happ_signature_is_hex_hmac_of_raw_body_keyed_with_secret_bytes() -> None:
    secret = new_channel_secret()
    expected = hmac.new(secret.encode(), BODY, hashlib.sha256).hexdigest()
    assert happ_signature(secret, BODY) == f"sha256={expected}"


def test_verify_accepts_any_current_secret_and_rejects_others() -> None:
    old, new, other = new_channel_secret(), new_channel_secret(), new_channel_secret()
    assert verify_happ_signature([new, old], BODY, happ_signature(old, BODY))
    assert verify_happ_signature([new, old], BODY, happ_signature(new, BODY))
    assert not verify_happ_signature([new, old], BODY, happ_signature(other, BODY))
    assert not verify_happ_signature([new], BODY + b" ", happ_signature(new, BODY))
    assert not verify_happ_signature([new], BODY, "sha256=")


def test_verify_accepts_upper_case_hex_but_not_another_body() -> None:
    secret = new_channel_secret()
    upper = "sha256=" + happ_signature(secret, BODY).removeprefix("sha256=").upper()
    assert verify_happ_signature([secret], BODY, upper)
    assert verify_happ_signature([secret], BODY, upper.replace("sha256", "SHA256"))
    assert not verify_happ_signature([secret], BODY + b"x", upper)


def test_channel_secret_has_standard_webhooks_form() -> None:
    secret = new_channel_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32


def _headers(current: str, extra: list[str]) -> dict[str, str]:
    return outgoing_headers(
        current_secret=current,
        extra_secrets=extra,
        delivery_id="rpl_1",
        timestamp=int(time.time()),
        attempt=2,
        body=BODY,
    )


def test_outgoing_headers_verify_with_the_standardwebhooks_library() -> None:
    secret = new_channel_secret()
    headers = _headers(secret, [])
    assert headers["X-HAPP-Attempt"] == "2"
    assert headers["X-HAPP-Delivery-Id"] == headers["webhook-id"] == "rpl_1"
    Webhook(secret).verify(BODY, headers)  # raises when wrong


def test_during_rotation_both_secrets_verify_the_standard_signature() -> None:
    old, new = new_channel_secret(), new_channel_secret()
    headers = _headers(new, [old])
    Webhook(new).verify(BODY, headers)
    Webhook(old).verify(BODY, headers)
    assert headers["X-HAPP-Signature"] == happ_signature(new, BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_channel_secret()).verify(BODY, headers)
