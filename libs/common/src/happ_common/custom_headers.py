"""A channel's own outgoing headers: static headers added to every POST to its
endpoint (an ``Authorization`` its gateway needs, a routing key).

Their values are credentials, so they are write-only: the admin API and the UI
show names with ``MASK`` for each value, and the request log records the names
only. The rules here are the one check, for the admin API's create and PATCH.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# What every value is shown as. Not printable ASCII, so it can never be a valid
# value: a masked header sent back by mistake is refused, never stored as is.
MASK = "••••"

MAX_HEADERS = 20
MAX_NAME_CHARS = 256
MAX_VALUE_CHARS = 4096

# RFC 7230 §3.2.6 token: the characters a header name may have.
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# Visible ASCII, spaces and tabs inside: no CR/LF (no header injection), no
# control characters, nothing an HTTP client would have to encode.
_VALUE = re.compile(r"^[\x21-\x7e]([\x20-\x7e\t]*[\x21-\x7e])?$")

# HAPP's own headers (signing.outgoing_headers, tracing) and the ones that frame
# the request: a channel's header replacing one would break the signature, the
# de-duplication key or the HTTP message itself.
RESERVED = frozenset(
    name.lower()
    for name in (
        "Content-Type",
        "Content-Length",
        "Content-Encoding",
        "Transfer-Encoding",
        "Connection",
        "Host",
        "User-Agent",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "traceparent",
        "tracestate",
    )
)
_RESERVED_PREFIXES = ("x-happ-",)

_BAD_NAME = (
    f"not a valid header name: 1-{MAX_NAME_CHARS} letters, digits and !#$%&'*+-.^_`|~ (RFC 7230)"
)
_MASK_SENT = (
    "this is the masked value HAPP shows: send the real value, or leave the header out to keep it"
)


def is_reserved(name: str) -> bool:
    lower = name.lower()
    return lower in RESERVED or lower.startswith(_RESERVED_PREFIXES)


def problems(headers: Mapping[str, str]) -> list[tuple[str, str]]:
    """What is wrong with a channel's complete set of headers, as (name, problem);
    empty when they may be stored."""
    found: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    for name, value in headers.items():
        if not _TOKEN.fullmatch(name) or len(name) > MAX_NAME_CHARS:
            found.append((name, _BAD_NAME))
            continue
        if is_reserved(name):
            found.append((name, f"{name} is set by HAPP on every request and cannot be overridden"))
            continue
        if name.lower() in seen:
            found.append((name, f"the same header as {seen[name.lower()]} (names ignore case)"))
            continue
        seen[name.lower()] = name
        if value == MASK:
            found.append((name, _MASK_SENT))
        elif len(value) > MAX_VALUE_CHARS or not _VALUE.fullmatch(value):
            found.append(
                (
                    name,
                    f"the value must be 1-{MAX_VALUE_CHARS} printable ASCII characters, "
                    "without line breaks or leading/trailing spaces",
                )
            )
    if len(headers) > MAX_HEADERS:
        found.append(("", f"at most {MAX_HEADERS} headers"))
    return found


def _any_case(text: str) -> str:
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else re.escape(c) for c in text)


def json_schema(*, nullable: bool) -> dict[str, object]:
    """The rules above as JSON Schema, for the OpenAPI document: names (HAPP's own
    refused, in any case), values, count. Only "one name once, whatever its case"
    and "not the mask" are left to the check itself."""
    reserved = "|".join(_any_case(n) + "$" for n in sorted(RESERVED))
    prefixes = "|".join(_any_case(p) for p in _RESERVED_PREFIXES)
    value: dict[str, object] = {
        "type": "string",
        "pattern": _VALUE.pattern,
        "minLength": 1,
        "maxLength": MAX_VALUE_CHARS,
    }
    return {
        "type": "object",
        "maxProperties": MAX_HEADERS,
        "propertyNames": {
            "pattern": f"^(?!(?:{reserved}|{prefixes}))" + _TOKEN.pattern.removeprefix("^"),
            "maxLength": MAX_NAME_CHARS,
        },
        "additionalProperties": {"anyOf": [value, {"type": "null"}]} if nullable else value,
    }


def masked(headers: Mapping[str, str] | None) -> dict[str, str]:
    """The headers as anyone may see them: names, each value ``MASK``."""
    return dict.fromkeys(headers or {}, MASK)
