"""Signed POSTs to an integrator's endpoint, and what their outcome means.

Used by the delivery service for every reply and by the admin API for "Send
test", so both classify failures the same way (SPEC §5 codes).

The client is aiohttp, chosen by measurement: HTTPS POSTs to a local TLS
receiver ran an order of magnitude faster than with httpx on the same machine
(docs/architecture.md, "Measured numbers behind the choices";
``make bench-delivery`` re-measures).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from happ_common.request_log import MAX_RESPONSE_BODY
from happ_common.urls import address_is_public


class PrivateAddressRefused(OSError):
    pass


class GuardedResolver(AbstractResolver):
    """Resolves, then drops every non-public address: the check is on the
    address aiohttp will actually connect to, so DNS rebinding cannot slip by."""

    def __init__(self, allow_private: bool) -> None:
        self._inner = DefaultResolver()
        self._allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if self._allow_private:
            return results
        public = [r for r in results if address_is_public(r["host"])]
        if not public:
            raise PrivateAddressRefused(
                f"{host} resolves only to private, loopback or link-local addresses"
            )
        return public

    async def close(self) -> None:
        await self._inner.close()


def _private_refusal(exc: BaseException) -> PrivateAddressRefused | None:
    """aiohttp wraps resolver errors; find ours to give its reason."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return None
        if isinstance(seen, PrivateAddressRefused):
            return seen
        seen = getattr(seen, "os_error", None) or seen.__cause__ or seen.__context__
    return None


@dataclass(frozen=True)
class AttemptOutcome:
    ok: bool
    status_code: int | None
    error_code: str | None
    error_message: str | None
    duration_ms: float
    response_body: str | None
    # Seconds the endpoint asked HAPP to wait (a 429 or 503 with a valid
    # ``Retry-After``); None when it did not ask.
    retry_after_s: float | None = None


# Statuses whose Retry-After asks the sender to slow down (RFC 9110 §10.2.3,
# RFC 6585 §4); on any other status the header is not read.
PAUSE_STATUSES = frozenset({429, 503})
_MAX_SECONDS_DIGITS = 9


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """RFC 9110's ``Retry-After``: delay-seconds or an HTTP-date, as seconds from
    now (a date in the past is 0); None when absent or not one of the two."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        # Any number of digits is valid; past a year's worth the caller's cap
        # applies anyway, and int() of thousands of digits is costly.
        return float(int(value)) if len(value) <= _MAX_SECONDS_DIGITS else float("inf")
    try:
        when = parsedate_to_datetime(value)
        if when.tzinfo is None:  # "-0000" or an obsolete zone: RFC 9110 dates are UTC
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
    except (TypeError, ValueError, IndexError, OverflowError):
        # Whatever the endpoint wrote, it must not fail an attempt already made.
        return None


def ssl_context(ca_file: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if ca_file:
        ctx.load_verify_locations(cafile=ca_file)
    return ctx


def new_session(
    *,
    ca_file: str | None,
    allow_private: bool,
    max_connections: int = 512,
    max_connections_per_host: int = 64,
) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        ssl=ssl_context(ca_file),
        resolver=GuardedResolver(allow_private),
        limit=max_connections,
        limit_per_host=max_connections_per_host,
        ttl_dns_cache=10,
        enable_cleanup_closed=True,
    )
    return aiohttp.ClientSession(
        connector=connector,
        auto_decompress=True,
        trust_env=False,
        cookie_jar=aiohttp.DummyCookieJar(),
    )


def _literal_address_refused(url: str, allow_private: bool) -> bool:
    return not allow_private and _is_private_literal(url)


@functools.lru_cache(maxsize=4096)
def _is_private_literal(url: str) -> bool:
    # Cached: every delivery checks its channel's URL, and parsing it and its
    # address showed in the delivery process's profile under load.
    host = urlsplit(url).hostname or ""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return not address_is_public(host)


async def post_signed(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    timeout_s: float,
    allow_private: bool,
) -> AttemptOutcome:
    started = time.perf_counter()

    def outcome(**kw: Any) -> AttemptOutcome:
        return AttemptOutcome(duration_ms=round((time.perf_counter() - started) * 1000, 2), **kw)

    def no_response(error_code: str, error_message: str) -> AttemptOutcome:
        return outcome(
            ok=False,
            status_code=None,
            error_code=error_code,
            error_message=error_message,
            response_body=None,
        )

    if not url.lower().startswith("https://"):
        return no_response("ENDPOINT_NOT_HTTPS", "the outgoing URL is not HTTPS")
    if _literal_address_refused(url, allow_private):
        return no_response(
            "ENDPOINT_UNREACHABLE", "the outgoing URL is a private, loopback or link-local address"
        )
    try:
        async with asyncio.timeout(timeout_s):
            async with session.post(url, data=body, headers=headers, allow_redirects=False) as resp:
                raw = await resp.content.read(MAX_RESPONSE_BODY)
                text = raw.decode("utf-8", errors="replace")
                status = resp.status
                retry_after = (
                    retry_after_seconds(resp.headers.get("Retry-After"))
                    if status in PAUSE_STATUSES
                    else None
                )
    except TimeoutError:
        return no_response("TIMEOUT", f"no response within {timeout_s:g} s")
    except (aiohttp.ClientSSLError, ssl.SSLError) as exc:
        return no_response("TLS_ERROR", str(exc)[:500])
    except (aiohttp.ClientError, OSError) as exc:
        refused = _private_refusal(exc)
        return no_response(
            "ENDPOINT_UNREACHABLE",
            str(refused) if refused else f"{type(exc).__name__}: {exc}"[:500],
        )
    except ValueError as exc:
        # The request could not even be built (a header aiohttp refuses): a failed
        # attempt like any other, never a handler error that would strand the reply.
        return no_response("INVALID_REQUEST", f"{type(exc).__name__}: {exc}"[:500])
    if 200 <= status < 300:
        return outcome(
            ok=True, status_code=status, error_code=None, error_message=None, response_body=text
        )
    if 300 <= status < 400:
        return outcome(
            ok=False,
            status_code=status,
            error_code="REDIRECT_NOT_FOLLOWED",
            error_message=f"the endpoint answered {status}; redirects are not followed",
            response_body=text,
        )
    return outcome(
        ok=False,
        status_code=status,
        error_code=f"HTTP_{status}",
        error_message=f"the endpoint answered {status}"
        + (f" and asked to wait {retry_after:g} s" if retry_after is not None else ""),
        response_body=text,
        retry_after_s=retry_after,
    )
