"""Outgoing URL rules: HTTPS only, and no private, loopback or link-local targets.

The address rule is checked when a URL is set (admin) and again on every
connection (delivery, via ``webhook_client.GuardedResolver``), on the address actually
connected to, so a hostname that later resolves to 127.0.0.1 gains nothing.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import urlsplit

from happ_common.errors import ErrorKind

ENDPOINT_NOT_HTTPS = ErrorKind(
    422, "ENDPOINT_NOT_HTTPS", "the outgoing URL is http://: only https:// is allowed"
)
INVALID_URL = ErrorKind(
    422, "INVALID_URL", "the outgoing URL is not an absolute https:// URL (see its `pattern`)"
)
ENDPOINT_UNREACHABLE = ErrorKind(
    422, "ENDPOINT_UNREACHABLE", "the outgoing URL's host does not resolve"
)
ENDPOINT_PRIVATE_ADDRESS = ErrorKind(
    422,
    "ENDPOINT_PRIVATE_ADDRESS",
    "the outgoing URL's host resolves to a private, loopback or link-local address "
    "(allowed only with `HAPP_ALLOW_PRIVATE_ENDPOINTS=true`)",
)
URL_ERRORS = (ENDPOINT_NOT_HTTPS, INVALID_URL, ENDPOINT_UNREACHABLE, ENDPOINT_PRIVATE_ADDRESS)

MAX_URL_LENGTH = 2048
_PORT = r"(?:[0-9]{1,4}|[0-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
# An outgoing URL, as the admin API's JSON schema states it and ``check_https_url``
# checks it: https (any case), a host name or IPv4 address, an optional port up
# to 65535, then any printable characters. No user info, no IPv6 literal.
OUTGOING_URL_PATTERN = (
    r"^[Hh][Tt][Tt][Pp][Ss]://[A-Za-z0-9._~-]+(?::" + _PORT + r")?(?:[/?#][^\x00-\x20\x7f]*)?$"
)
_OUTGOING_URL = re.compile(OUTGOING_URL_PATTERN)
# An attachment's URL (incoming, or an operator's): an absolute http(s) URL, the
# scheme, a host part of printable ASCII (no brackets, so no IPv6 literal:
# urlsplit refuses malformed ones), then any printable characters.
HTTP_URL_PATTERN = r"^[Hh][Tt][Tt][Pp][Ss]?://[!-\"$-.0->@-Z\\^-~]+(?:[/?#][^\x00-\x20\x7f]*)?$"


class UrlRejected(ValueError):
    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.code = kind.code
        self.message = message


def address_is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    )


def check_https_url(url: str) -> str:
    """Syntax and scheme only (no DNS): exactly the URLs ``OUTGOING_URL_PATTERN``
    matches, at most 2048 characters."""
    if len(url) > MAX_URL_LENGTH:
        raise UrlRejected(INVALID_URL, "The outgoing URL is longer than 2048 characters.")
    if _OUTGOING_URL.fullmatch(url) is not None:
        return url
    if url.partition(":")[0].strip().lower() == "http":
        raise UrlRejected(
            ENDPOINT_NOT_HTTPS,
            "The outgoing URL must use https://; HTTP is not supported for security reasons.",
        )
    raise UrlRejected(
        INVALID_URL,
        "The outgoing URL must be an absolute https:// URL: https://host[:port][/path], "
        "without spaces.",
    )


def resolve_and_check(url: str, *, allow_private: bool) -> None:
    """Refuse a URL whose host resolves to a non-public address (blocking DNS)."""
    host = urlsplit(url).hostname or ""
    if allow_private:
        return
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UrlRejected(
            ENDPOINT_UNREACHABLE, f"The outgoing URL's host {host!r} does not resolve."
        ) from exc
    for info in infos:
        if not address_is_public(str(info[4][0])):
            raise UrlRejected(
                ENDPOINT_PRIVATE_ADDRESS,
                f"The outgoing URL's host {host!r} resolves to a private, loopback or "
                "link-local address, which is not allowed.",
            )


def redacted_url(url: str) -> str:
    """``url`` without credentials or query, for traces: both may carry secrets."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"
