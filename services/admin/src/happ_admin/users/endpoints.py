"""Users and memberships (SPEC §6a): admins only."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from happ_admin.auth import require_admin
from happ_admin.deps import Users
from happ_admin.errors import ERRORS, USER_CONFLICTS
from happ_admin.users.schemas import UserCreate, UserList, UserOut, UserUpdate

router = APIRouter(
    prefix="/api", tags=["users"], dependencies=[Depends(require_admin)], responses=ERRORS
)


@router.post(
    "/users", status_code=201, summary="Add an operator or an admin", responses=USER_CONFLICTS
)
async def create_user(body: UserCreate, users: Users) -> UserOut:
    return UserOut.of(await users.create(body))


@router.get("/users", summary="Every user, by username")
async def list_users(users: Users) -> UserList:
    return UserList(items=[UserOut.of(u) for u in await users.list()])


@router.get("/users/{user_id}", summary="One user")
async def get_user(user_id: str, users: Users) -> UserOut:
    return UserOut.of(await users.get(user_id))


@router.patch(
    "/users/{user_id}",
    summary="Change a user: name, password, role, channels (memberships), disabled",
)
async def update_user(user_id: str, body: UserUpdate, users: Users) -> UserOut:
    return UserOut.of(await users.update(user_id, body))


@router.delete("/users/{user_id}", status_code=204, summary="Remove a user (their sessions end)")
async def delete_user(user_id: str, users: Users) -> Response:
    await users.delete(user_id)
    return Response(status_code=204)


@router.get("/channels/{channel_id}/members", summary="The users who are members of a channel")
async def channel_members(channel_id: str, users: Users) -> UserList:
    return UserList(items=[UserOut.of(u) for u in await users.list(channel_id)])
