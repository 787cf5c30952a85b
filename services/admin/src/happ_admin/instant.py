"""A date-time the API takes (a query or a body), as its OpenAPI document states it."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from pydantic import BeforeValidator

# RFC 3339, as the document's `format: date-time` says: no bare dates, no unix
# times, an offset always (pydantic alone would take all three).
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?"
    r"(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def _rfc3339(value: object) -> object:
    if not isinstance(value, str) or _RFC3339.fullmatch(value) is None:
        raise ValueError("use an RFC 3339 date-time, such as 2026-12-01T09:30:00Z")
    return value


Instant = Annotated[datetime, BeforeValidator(_rfc3339)]
