"""What the user routes take and answer (SPEC §6a)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from happ_admin.users.repository import User

# Letters of either case (stored lowercase: usernames are case-insensitive).
Username = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"),
    AfterValidator(str.lower),
]
Password = Annotated[str, Field(min_length=10, max_length=200)]


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    username: Username
    name: str = Field(min_length=1, max_length=100)
    password: Password
    role: Literal["admin", "operator"] = "operator"
    channels: list[str] = Field(default_factory=list, max_length=10_000)


class UserUpdate(BaseModel):
    """Only the fields sent change. A new password, or ``disabled: true``, ends
    the user's open sessions."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str | None = Field(default=None, min_length=1, max_length=100)
    password: Password | None = None
    role: Literal["admin", "operator"] | None = None
    channels: list[str] | None = Field(default=None, max_length=10_000)
    disabled: bool | None = None


class UserOut(BaseModel):
    id: str
    username: str
    name: str
    role: Literal["admin", "operator"]
    channels: list[str]
    disabled: bool
    created_at: datetime
    updated_at: datetime
    last_login_at: datetime | None

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls.model_validate(user.model_dump(exclude={"password_hash"}))


class UserList(BaseModel):
    items: list[UserOut]
