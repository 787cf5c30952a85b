"""Keyset pagination.

Lists page by keyset, newest first: a cursor is the last item's sort key
``(time, unique id)``, and the next page is everything strictly older. Entries
written meanwhile sort above the cursor, so pages never shift under a reader
the way skip/offset pages do. A paged list answers ``{items, next_cursor}``
(``Page``); ``next_cursor`` is ``null`` on the last page.

A cursor is ``<microseconds since 1970>.<the key's UTF-8 bytes in hex>``.

Clients should pass ``next_cursor`` back unchanged and not build their own; the
format is stated (``CURSOR_PATTERN``, in the OpenAPI document too) so that every
string it matches is a cursor: a made-up one pages from wherever it points, and
only shows an admin what the admin may already see. Not signed for that reason.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel

from happ_common.errors import INVALID_PAYLOAD, ErrorDetail
from happ_common.mongo import Document

Keyset = tuple[datetime, str]
T = TypeVar("T")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# Keys are ids of up to a few hundred characters (a conversation's sender id is
# at most 256): 2048 bytes is room enough. 16 digits of microseconds reach 2286.
_MAX_KEY_BYTES = 2048
CURSOR_PATTERN = rf"^[0-9]{{1,16}}\.(?:[0-9a-f]{{2}}){{0,{_MAX_KEY_BYTES}}}$"
_CURSOR = re.compile(CURSOR_PATTERN)

Cursor = Annotated[
    str | None,
    Query(
        pattern=CURSOR_PATTERN,
        description="The previous page's `next_cursor`, unchanged.",
    ),
]


def encode(at: datetime, key: str) -> str:
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    micros = max(0, (at - _EPOCH) // _MICROSECOND)
    raw = key.encode()[:_MAX_KEY_BYTES]
    return f"{micros}.{raw.hex()}"


def decode(cursor: str | None) -> Keyset | None:
    if not cursor:
        return None
    if _CURSOR.fullmatch(cursor) is None:
        raise INVALID_PAYLOAD(
            "The cursor is not valid: pass the next_cursor of the previous page unchanged.",
            [ErrorDetail(field="query.cursor", problem="not a cursor this API returned")],
        )
    micros, _, key = cursor.partition(".")
    at = _EPOCH + timedelta(microseconds=int(micros))
    # A made-up key may not be UTF-8: it is only compared, so a replacement will do.
    return at, bytes.fromhex(key).decode("utf-8", errors="replace")


# Each list subclasses it under a name of its own (LogPage, MessagePage...): the
# OpenAPI document publishes schemas by class name, and Page[X] would be Page_X_.
class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None


def page_of(
    found: list[T], limit: int, cursor_of: Callable[[T], str]
) -> tuple[list[T], str | None]:
    """The first ``limit`` of ``found``, read with ``limit + 1`` to tell whether
    another page follows, and the cursor of that page (None: this is the last)."""
    items = found[:limit]
    return items, (cursor_of(items[-1]) if len(found) > limit and items else None)


def keyset_after(
    time_field: str, key_field: str, keyset: Keyset | None, *, descending: bool = True
) -> Document:
    """The query condition for the documents strictly after ``keyset`` in the
    list's (time, key) order; {} on the first page."""
    if keyset is None:
        return {}
    at, key = keyset
    op = "$lt" if descending else "$gt"
    return {"$or": [{time_field: {op: at}}, {time_field: at, key_field: {op: key}}]}


def all_of(*parts: Document) -> Document:
    parts = tuple(p for p in parts if p)
    if not parts:
        return {}
    return parts[0] if len(parts) == 1 else {"$and": list(parts)}
