"""Outgoing URL rules: HTTPS only, and no private, loopback or link-local targets.

The address rule is checked when a URL is set (admin) and again on every
connection (delivery, via ``ssrf.GuardedResolver``), on the address actually
connected to, so a hostname that later resolves to 127.0.0.1 gains nothing.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit


class UrlRejected(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
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
    """Syntax and scheme only (no DNS): HTTPS, a host, at most 2048 characters."""
    if len(url) > 2048:
        raise UrlRejected("INVALID_URL", "The outgoing URL is longer than 2048 characters.")
    parts = urlsplit(url)
    if parts.scheme.lower() == "http":
        raise UrlRejected(
            "ENDPOINT_NOT_HTTPS",
            "The outgoing URL must use https://; HTTP is not supported for security reasons.",
        )
    if parts.scheme.lower() != "https" or not parts.hostname:
        raise UrlRejected("INVALID_URL", "The outgoing URL must be an absolute https:// URL.")
    try:
        _ = parts.port
    except ValueError as exc:
        raise UrlRejected("INVALID_URL", "The outgoing URL has an invalid port.") from exc
    return url


def resolve_and_check(url: str, *, allow_private: bool) -> None:
    """Refuse a URL whose host resolves to a non-public address (blocking DNS)."""
    host = urlsplit(url).hostname or ""
    if allow_private:
        return
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UrlRejected(
            "ENDPOINT_UNREACHABLE", f"The outgoing URL's host {host!r} does not resolve."
        ) from exc
    for info in infos:
        if not address_is_public(str(info[4][0])):
            raise UrlRejected(
                "ENDPOINT_PRIVATE_ADDRESS",
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
