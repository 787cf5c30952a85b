"""What the session routes take and answer: signing in to the web UI."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class TokenLogin(BaseModel):
    """An admin token (one of ``HAPP_ADMIN_TOKEN``)."""

    model_config = ConfigDict(extra="forbid", strict=True, title="Sign in with an admin token")

    token: str = Field(min_length=1, max_length=4096)


class PasswordLogin(BaseModel):
    """A user's username and password."""

    model_config = ConfigDict(
        extra="forbid", strict=True, title="Sign in with a username and password"
    )

    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=200)


# Either way in, never both: each model forbids the other's fields.
LoginRequest = TokenLogin | PasswordLogin


class SessionUser(BaseModel):
    id: str
    name: str
    role: Literal["admin", "operator"]
    # The channels an operator is a member of; null for admins (every channel).
    channels: list[str] | None


class SessionOut(BaseModel):
    authenticated: bool
    via: Literal["bearer", "cookie"]
    # Send it back as X-CSRF-Token on every state-changing request made with
    # the session cookie. Null for bearer-token callers, who need none.
    csrf_token: str | None
    expires_at: datetime | None
    user: SessionUser
