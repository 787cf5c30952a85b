"""Opaque keyset cursors: base64url of ``[iso time, unique key]``.

Opaque so clients cannot come to depend on their shape; not signed because
forging one only shows an admin what the admin may already see.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

from happ_common.errors import ErrorDetail, HappError

Keyset = tuple[datetime, str]


def encode(at: datetime, key: str) -> str:
    raw = json.dumps([at.isoformat(), key], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str | None) -> Keyset | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at_text, key = json.loads(raw)
        at = datetime.fromisoformat(at_text)
        if not isinstance(key, str):
            raise TypeError(key)
    except (ValueError, TypeError) as exc:
        raise HappError(
            422,
            "INVALID_PAYLOAD",
            "The cursor is not valid: pass the next_cursor of the previous page unchanged.",
            [ErrorDetail(field="query.cursor", problem="not a cursor this API returned")],
        ) from exc
    return (at if at.tzinfo else at.replace(tzinfo=UTC)), key
