"""The ``users`` collection: operators and admins who sign in with a password.

Every request made with a user's session needs the user (role, memberships,
disabled, password change), so ``recent`` keeps them a few seconds in this
process instead of reading the database each time. A change made through this
repository drops its copy at once; another admin replica's change is seen
within ``RECENT_S``.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from happ_common.mongo import USERS, Document

UserRole = Literal["admin", "operator"]
RECENT_S = 2.0
_RECENT_MAX = 10_000


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
    """Its indexes (a unique ``username``) are made by ``happ_common.mongo.ensure_indexes``."""

    def __init__(self, db: AsyncDatabase[Document], *, recent_s: float = RECENT_S) -> None:
        self._coll = db[USERS]
        self._recent_s = recent_s
        # user id -> (read at, monotonic; the user, None: no such user)
        self._recent: dict[str, tuple[float, User | None]] = {}
        # Counts the writes finished: a read that overlapped one is not kept (it
        # may hold what was there before the write).
        self._writes = 0

    def _written(self, user_id: str) -> None:
        self._writes += 1
        self._recent.pop(user_id, None)

    async def insert(self, user: User) -> None:
        try:
            await self._coll.insert_one(user.model_dump(by_alias=True))
        except DuplicateKeyError as exc:
            raise UsernameTaken(user.username) from exc
        finally:
            self._written(user.id)

    async def get(self, user_id: str) -> User | None:
        doc = await self._coll.find_one({"_id": user_id})
        return User.model_validate(doc) if doc else None

    async def recent(self, user_id: str) -> User | None:
        """The user as read at most ``recent_s`` ago (by this process)."""
        now = time.monotonic()
        hit = self._recent.get(user_id)
        if hit is not None and now - hit[0] < self._recent_s:
            return hit[1]
        writes = self._writes
        user = await self.get(user_id)
        if writes != self._writes:
            return user
        if len(self._recent) >= _RECENT_MAX:
            self._recent = {k: v for k, v in self._recent.items() if now - v[0] < self._recent_s}
            if len(self._recent) >= _RECENT_MAX:
                self._recent.clear()
        self._recent[user_id] = (now, user)
        return user

    async def by_username(self, username: str) -> User | None:
        doc = await self._coll.find_one({"username": username})
        return User.model_validate(doc) if doc else None

    async def list(self, *, channel_id: str | None = None, limit: int = 1000) -> list[User]:
        query: Document = {"channels": channel_id} if channel_id else {}
        cursor = self._coll.find(query).sort("username", ASCENDING).limit(limit)
        return [User.model_validate(d) async for d in cursor]

    async def update(self, user_id: str, fields: Document) -> User | None:
        try:
            doc = await self._coll.find_one_and_update(
                {"_id": user_id}, {"$set": fields}, return_document=ReturnDocument.AFTER
            )
        finally:
            self._written(user_id)
        return User.model_validate(doc) if doc else None

    async def delete(self, user_id: str) -> bool:
        try:
            return (await self._coll.delete_one({"_id": user_id})).deleted_count == 1
        finally:
            self._written(user_id)
