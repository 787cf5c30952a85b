"""The ``admin_sessions`` collection: the web UI's sessions."""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from happ_common.mongo import Document

ADMIN_SESSIONS = "admin_sessions"


class SessionRepository:
    """Server-side UI sessions. Only a hash of the session id is stored, so a
    copy of the database does not yield a usable cookie."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._coll = db[ADMIN_SESSIONS]

    async def ensure_indexes(self) -> None:
        await self._coll.create_index("expires_at", expireAfterSeconds=0, name="expiry")

    async def insert(self, doc: Document) -> None:
        await self._coll.insert_one(doc)

    async def get(self, session_hash: str) -> dict[str, Any] | None:
        return await self._coll.find_one({"_id": session_hash})

    async def delete(self, session_hash: str) -> None:
        await self._coll.delete_one({"_id": session_hash})
