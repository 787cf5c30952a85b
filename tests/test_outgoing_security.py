"""Outgoing URL rules: HTTPS only; loopback, private and link-local targets refused
unless allowed, checked on the address actually connected to."""

from __future__ import annotations

import pytest

from happ_common.signing import outgoing_headers
from happ_common.urls import UrlRejected, address_is_public, check_https_url, resolve_and_check
from happ_common.webhook_client import new_session, post_signed
from tests.conftest import System

BODY = b'{"to":"u","text":"hi"}'


def _headers() -> dict[str, str]:
    return outgoing_headers(
        current_secret="whsec_" + "A" * 44,
        extra_secrets=[],
        delivery_id="rpl_x",
        timestamp=1,
        attempt=1,
        body=BODY,
    )


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
async def test_loopback_is_refused_at_connection_time_unless_allowed(
    system: System, host: str
) -> None:
    path = f"/ssrf-{host}"
    url = f"https://{host}:{system.receiver_port}{path}"
    refused_session = new_session(ca_file=str(system.tls.ca_file), allow_private=False)
    allowed_session = new_session(ca_file=str(system.tls.ca_file), allow_private=True)
    try:
        refused = await post_signed(
            refused_session, url, BODY, _headers(), timeout_s=5, allow_private=False
        )
        assert not refused.ok
        assert refused.error_code == "ENDPOINT_UNREACHABLE"
        assert "private" in (refused.error_message or "")
        assert system.receiver.on_path(path) == []

        allowed = await post_signed(
            allowed_session, url, BODY, _headers(), timeout_s=5, allow_private=True
        )
        assert allowed.ok and allowed.status_code == 200
        assert len(system.receiver.on_path(path)) == 1
    finally:
        await refused_session.close()
        await allowed_session.close()


async def test_http_is_never_sent(system: System) -> None:
    session = new_session(ca_file=None, allow_private=True)
    try:
        outcome = await post_signed(
            session,
            f"http://127.0.0.1:{system.receiver_port}/plain",
            BODY,
            _headers(),
            timeout_s=5,
            allow_private=True,
        )
    finally:
        await session.close()
    assert outcome.error_code == "ENDPOINT_NOT_HTTPS"


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("::1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("224.0.0.1", False),
        ("0.0.0.0", False),
        ("::ffff:127.0.0.1", False),
        ("100.64.0.1", False),
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
    ],
)
def test_address_classification(address: str, public: bool) -> None:
    assert address_is_public(address) is public


def test_url_rules_when_a_url_is_set() -> None:
    with pytest.raises(UrlRejected) as not_https:
        check_https_url("http://example.com/hook")
    assert not_https.value.code == "ENDPOINT_NOT_HTTPS"
    with pytest.raises(UrlRejected):
        check_https_url("https:///no-host")
    with pytest.raises(UrlRejected) as private:
        resolve_and_check("https://localhost/hook", allow_private=False)
    assert private.value.code == "ENDPOINT_PRIVATE_ADDRESS"
    resolve_and_check("https://localhost/hook", allow_private=True)
