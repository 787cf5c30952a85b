"""What the dead-letter routes answer."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class DeadLetterOut(BaseModel):
    """A record a consumer could never handle, parked on its dead-letter topic."""

    id: str = Field(description="`<dead-letter topic>:<partition>:<offset>`")
    topic: str
    origin_topic: str
    origin_partition: int
    origin_offset: int
    consumer: str | None
    error: str | None
    parked_at: datetime | None
    key: str | None
    value: str = Field(description="The record as it was (first 64 KiB)")


class DeadLetterList(BaseModel):
    items: list[DeadLetterOut]
