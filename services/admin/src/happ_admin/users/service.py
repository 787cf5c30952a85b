"""Users and their channel memberships (SPEC §6a): admins manage them."""

from __future__ import annotations

import builtins
import secrets
from datetime import UTC, datetime

from happ_admin.channels.service import ChannelService
from happ_admin.errors import CHANNEL_NOT_FOUND, USER_NOT_FOUND, USERNAME_TAKEN
from happ_admin.users.passwords import hash_password, verify_password
from happ_admin.users.repository import User, UsernameTaken, UserRepository
from happ_admin.users.schemas import UserCreate, UserUpdate
from happ_common.errors import ErrorDetail, HappError
from happ_common.mongo import Document


def user_not_found(user_id: str) -> HappError:
    return USER_NOT_FOUND(f"No user {user_id!r} exists.")


class UserService:
    def __init__(self, repo: UserRepository, channels: ChannelService) -> None:
        self._repo = repo
        self._channels = channels

    async def create(self, req: UserCreate) -> User:
        await self._check_channels(req.channels)
        now = datetime.now(UTC)
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)
        user = User(
            id="usr_" + secrets.token_hex(12),
            username=req.username,
            name=req.name,
            role=req.role,
            channels=list(dict.fromkeys(req.channels)),
            password_hash=await hash_password(req.password),
            password_changed_at=now,
            created_at=now,
            updated_at=now,
        )
        try:
            await self._repo.insert(user)
        except UsernameTaken as exc:
            raise USERNAME_TAKEN(f"The username {req.username!r} is taken; pick another.") from exc
        return user

    async def list(self, channel_id: str | None = None) -> builtins.list[User]:
        if channel_id is not None:
            await self._channels.get(channel_id)
        return await self._repo.list(channel_id=channel_id)

    async def get(self, user_id: str) -> User:
        user = await self._repo.get(user_id)
        if user is None:
            raise user_not_found(user_id)
        return user

    async def update(self, user_id: str, req: UserUpdate) -> User:
        await self.get(user_id)
        now = datetime.now(UTC)
        fields: Document = {
            k: v
            for k, v in req.model_dump(exclude_unset=True, exclude={"password"}).items()
            if v is not None
        }
        if req.channels is not None:
            await self._check_channels(req.channels)
            fields["channels"] = list(dict.fromkeys(req.channels))
        if req.password is not None:
            fields["password_hash"] = await hash_password(req.password)
        if req.password is not None or req.disabled:
            fields["password_changed_at"] = now  # ends the user's open sessions
        fields["updated_at"] = now
        user = await self._repo.update(user_id, fields)
        if user is None:
            raise user_not_found(user_id)
        return user

    async def delete(self, user_id: str) -> None:
        if not await self._repo.delete(user_id):
            raise user_not_found(user_id)

    async def authenticate(self, username: str, password: str) -> User | None:
        """The user, if the password is theirs and they may sign in; the same time
        is spent whether or not the username exists."""
        user = await self._repo.by_username(username.strip().lower())
        ok = await verify_password(password, user.password_hash if user else None)
        if user is None or not ok or user.disabled:
            return None
        await self._repo.update(user.id, {"last_login_at": datetime.now(UTC)})
        return user

    async def _check_channels(self, channel_ids: builtins.list[str]) -> None:
        wanted = list(dict.fromkeys(channel_ids))
        if not wanted:
            return
        found, _ = await self._channels.list(None, len(wanted), only=frozenset(wanted))
        existing = {c.id for c in found}
        missing = [c for c in wanted if c not in existing]
        if missing:
            raise CHANNEL_NOT_FOUND(
                "Some channels in 'channels' do not exist: create them first, or leave them out.",
                [ErrorDetail(field="channels", problem=f"no channel {c}") for c in missing],
            )
