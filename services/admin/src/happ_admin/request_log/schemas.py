"""What the request-log routes answer."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from happ_admin.cursors import Page
from happ_common.request_log import Direction, LogEntry


class LogEntryOut(BaseModel):
    id: str
    channel_id: str
    direction: Direction
    created_at: datetime
    method: str
    url: str
    status_code: int | None
    error_code: str | None
    duration_ms: float
    request_body: str | None
    response_body: str | None
    message_id: str | None
    attempt: int | None
    # An outgoing attempt's own channel headers, values masked (never stored).
    outgoing_headers: dict[str, str] | None = None

    @classmethod
    def of(cls, entry: LogEntry) -> LogEntryOut:
        return cls.model_validate(entry.model_dump())


class LogPage(Page[LogEntryOut]):
    pass
