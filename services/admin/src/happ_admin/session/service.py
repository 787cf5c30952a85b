"""The web UI's sessions.

The UI never holds a token: it trades one (or a username and password) for a
random session id kept in an HttpOnly, SameSite=Strict cookie. Sessions live in
MongoDB (only a hash of the id is stored), so any admin replica honours them, a
sign-out ends them everywhere, and removing a token from the configuration ends
every session opened with it.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from happ_admin.session.repository import SessionRepository
from happ_admin.users.repository import User, UserRepository


def _fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _session_hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Session:
    id: str
    csrf_token: str
    expires_at: datetime
    # Signed in with a username and password; None: with an admin token.
    user: User | None = None


class SessionService:
    def __init__(
        self,
        tokens: list[str],
        repo: SessionRepository,
        ttl_hours: float,
        users: UserRepository | None = None,
    ) -> None:
        self._fingerprints = {_fingerprint(t) for t in tokens}
        self._repo = repo
        self._users = users
        self._ttl = timedelta(hours=ttl_hours)

    async def open(self, token: str | None = None, user: User | None = None) -> Session:
        now = datetime.now(UTC)
        session = Session(
            id=secrets.token_urlsafe(32),
            csrf_token=secrets.token_urlsafe(32),
            expires_at=now + self._ttl,
            user=user,
        )
        doc: dict[str, object] = {
            "_id": _session_hash(session.id),
            "csrf_token": session.csrf_token,
            "created_at": now,
            "expires_at": session.expires_at,
        }
        if user is not None:
            doc["user_id"] = user.id
        else:
            doc["token_fp"] = _fingerprint(token or "")
        await self._repo.insert(doc)
        return session

    async def get(self, session_id: str) -> Session | None:
        if not session_id or len(session_id) > 200:
            return None
        doc = await self._repo.get(_session_hash(session_id))
        if doc is None:
            return None
        expires_at: datetime = _aware(doc["expires_at"])
        # The TTL sweep is lazy.
        if expires_at <= datetime.now(UTC):
            return None
        user = None
        if "user_id" in doc:
            # A user removed, disabled, or whose password changed since: signed out.
            user = await self._users.recent(doc["user_id"]) if self._users else None
            created_at = _aware(doc["created_at"])
            if user is None or user.disabled or _aware(user.password_changed_at) > created_at:
                return None
        elif doc.get("token_fp") not in self._fingerprints:
            return None  # the token it was opened with was taken out of service
        return Session(
            id=session_id, csrf_token=doc["csrf_token"], expires_at=expires_at, user=user
        )

    async def close(self, session_id: str) -> None:
        await self._repo.delete(_session_hash(session_id))
