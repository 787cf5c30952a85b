"""What the bulk recovery routes take and answer."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from happ_admin.instant import Instant


class RecoveryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: Instant = Field(
        description="Replies written at or after this time (RFC 3339) "
        "whose delivery is `failed` are sent again"
    )


class RecoveryCounts(BaseModel):
    """Where the replies a recovery queued stand now, read from their delivery states."""

    queued: int = Field(description="still on their way (pending, sending or retrying)")
    delivered: int
    failed: int = Field(description="failed (or canceled) again")


class RecoveryOut(BaseModel):
    id: str
    channel_id: str
    since: datetime
    requested_at: datetime
    requested_by: str | None
    state: Literal["running", "done", "failed", "interrupted"] = Field(
        description="`running` while conversations are being scanned; `interrupted`: its admin "
        "process stopped, request the recovery again to finish it"
    )
    conversations_scanned: int
    total: int = Field(description="replies this recovery queued for delivery again")
    counts: RecoveryCounts
    finished_at: datetime | None
    error: str | None


class RecoveryList(BaseModel):
    items: list[RecoveryOut]
