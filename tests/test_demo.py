"""``make demo``'s verdict on a reply: its own channel's are verified, another
channel's (one pointing at the same receiver) are named, not called invalid."""

from __future__ import annotations

import json

from happ_common.signing import happ_signature
from happ_devtools.demo import signature_verdict
from happ_devtools.receiver import Received

SECRET = "whsec_ZGVtby1zZWNyZXQtb2YtdGhpcnR5LXR3by1ieXRlcyE="


def _reply(channel_id: str, secret: str) -> Received:
    body = json.dumps({"channel_id": channel_id, "text": "hi"}).encode()
    return Received("/happ", {"X-HAPP-Signature": happ_signature(secret, body)}, body, 0.0)


def test_own_reply_is_verified() -> None:
    assert signature_verdict(_reply("cm_demo", SECRET), "cm_demo", SECRET) == (
        "signature valid: yes"
    )


def test_own_reply_with_a_bad_signature_is_invalid() -> None:
    got = _reply("cm_demo", "whsec_b3RoZXI=")
    assert signature_verdict(got, "cm_demo", SECRET) == "signature valid: NO"


def test_another_channels_reply_is_named_not_called_invalid() -> None:
    got = _reply("cm_other", "whsec_b3RoZXI=")
    verdict = signature_verdict(got, "cm_demo", SECRET)
    assert verdict == (
        "reply for another channel (cm_other): not verified with this channel's secret"
    )


def test_a_body_that_is_not_json_is_checked_as_it_is() -> None:
    got = Received("/happ", {}, b"not json", 0.0)
    assert signature_verdict(got, "cm_demo", SECRET) == "signature valid: NO"
