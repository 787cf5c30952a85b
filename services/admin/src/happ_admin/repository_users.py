"""The ``users`` collection: operators and admins who sign in with a password."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from happ_common.mongo import Document

USERS = "users"
UserRole = Literal["admin", "operator"]


class UsernameTaken(Exception):
    pass


class User(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    id: str = Field(alias="_id")
    username: str
    name: str
    role: UserRole
    channels: list[str] = Field(default_factory=list)
    password_hash: str
    # Sessions opened before this no longer count (a password change, a disable).
    password_changed_at: datetime
    disabled: bool = False
    created_at: datetime
    updated_at: datetime
    last_login_at: datetime | None = None


class UserRepository:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._coll = db[USERS]

    async def ensure_indexes(self) -> None:
        await self._coll.create_index("username", unique=True, name="username")
        await self._coll.create_index("channels", name="member_of")

    async def insert(self, user: User) -> None:
        try:
            await self._coll.insert_one(user.model_dump(by_alias=True))
        except DuplicateKeyError as exc:
            raise UsernameTaken(user.username) from exc

    async def get(self, user_id: str) -> User | None:
        doc = await self._coll.find_one({"_id": user_id})
        return User.model_validate(doc) if doc else None

    async def by_username(self, username: str) -> User | None:
        doc = await self._coll.find_one({"username": username})
        return User.model_validate(doc) if doc else None

    async def list(self, *, channel_id: str | None = None, limit: int = 1000) -> list[User]:
        query: Document = {"channels": channel_id} if channel_id else {}
        cursor = self._coll.find(query).sort("username", ASCENDING).limit(limit)
        return [User.model_validate(d) async for d in cursor]

    async def update(self, user_id: str, fields: Document) -> User | None:
        doc = await self._coll.find_one_and_update(
            {"_id": user_id}, {"$set": fields}, return_document=ReturnDocument.AFTER
        )
        return User.model_validate(doc) if doc else None

    async def delete(self, user_id: str) -> bool:
        return (await self._coll.delete_one({"_id": user_id})).deleted_count == 1
