"""Who may call ``/api``: a bearer token, or the web UI's session cookie
(``happ_admin.session``).

Tokens come from ``HAPP_ADMIN_TOKEN`` (several, comma separated) and are
compared in constant time against every configured token, so the time taken
tells nothing about which one came close.

Requests authenticated by the cookie that change state must also carry
``X-CSRF-Token`` with the session's CSRF token (synchronizer token):
SameSite=Strict already keeps the cookie off cross-site requests, the header
keeps a same-site page that is not the UI from using it.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyCookie, HTTPBearer

from happ_admin.errors import ADMIN_ONLY, CSRF_TOKEN_INVALID, NOT_A_MEMBER, UNAUTHORIZED
from happ_admin.session.service import Session, SessionService
from happ_admin.users.repository import UserRole
from happ_common.errors import HappError
from happ_common.events import Author

SESSION_COOKIE = "happ_admin_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# Declared only so the OpenAPI document shows both ways in; checked by hand below.
_bearer_doc = HTTPBearer(
    auto_error=False, description="An admin token from HAPP_ADMIN_TOKEN.", scheme_name="token"
)
_cookie_doc = APIKeyCookie(
    name=SESSION_COOKIE,
    auto_error=False,
    description=(
        "The web UI's session (POST /api/session). State-changing requests also need the "
        f"{CSRF_HEADER} header."
    ),
    scheme_name="session",
)


def unauthorized(message: str) -> HappError:
    return UNAUTHORIZED(message, headers={"WWW-Authenticate": "Bearer"})


Role = UserRole


def not_a_member(channel_id: str) -> HappError:
    return NOT_A_MEMBER(
        f"You are not a member of channel {channel_id}; ask an admin to add you to it.",
    )


@dataclass(frozen=True)
class Principal:
    """Who is calling. A bearer token acts as an admin (automation)."""

    via: Literal["bearer", "cookie"]
    session: Session | None = None
    user_id: str = "token"
    name: str = "Admin"
    role: Role = "admin"
    # The channels an operator is a member of; None: every channel (admins).
    channels: frozenset[str] | None = None

    def can_access(self, channel_id: str) -> bool:
        return self.channels is None or channel_id in self.channels

    def require_channel(self, channel_id: str) -> None:
        if not self.can_access(channel_id):
            raise not_a_member(channel_id)

    def require_admin(self) -> None:
        if self.role != "admin":
            raise ADMIN_ONLY("Only an admin may do this.")

    @property
    def author(self) -> Author:
        return Author(type="operator", id=self.user_id, name=self.name)


class Authenticator:
    def __init__(self, tokens: list[str], sessions: SessionService) -> None:
        self._tokens = [t.encode() for t in tokens]
        self.sessions = sessions

    def token_matches(self, given: str) -> bool:
        candidate = given.encode()
        ok = False
        for expected in self._tokens:
            ok |= hmac.compare_digest(expected, candidate)
        return ok

    async def current(self, principal: Principal) -> Principal | None:
        """The caller as they are now, for a long-lived request (the live-update
        stream): None once their session has ended (signed out, expired; the user
        removed, disabled or given a new password), with their memberships and
        role as they are now otherwise. A bearer token is checked per request."""
        if principal.session is None:
            return principal
        session = await self.sessions.get(principal.session.id)
        return None if session is None else principal_of(session)


def principal_of(session: Session) -> Principal:
    user = session.user
    if user is None:
        return Principal(via="cookie", session=session)
    return Principal(
        via="cookie",
        session=session,
        user_id=user.id,
        name=user.name,
        role=user.role,
        channels=None if user.role == "admin" else frozenset(user.channels),
    )


def _authenticator(request: Request) -> Authenticator:
    auth: Authenticator = request.app.state.auth
    return auth


async def require_auth(
    request: Request,
    _bearer: Annotated[object, Security(_bearer_doc)] = None,
    cookie: Annotated[str | None, Security(_cookie_doc)] = None,
) -> Principal:
    auth = _authenticator(request)
    header = request.headers.get("authorization")
    if header is not None:
        # An explicit Authorization header decides, even next to a cookie: a
        # wrong token is never rescued by a session.
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthorized("Send the admin token as 'Authorization: Bearer <token>'.")
        if not auth.token_matches(token.strip()):
            raise unauthorized(
                "The admin token is not valid; use a token configured in HAPP_ADMIN_TOKEN."
            )
        return Principal(via="bearer")
    if cookie:
        session = await auth.sessions.get(cookie)
        if session is None:
            raise unauthorized("Your session has ended; sign in again.")
        if request.method not in SAFE_METHODS:
            given = request.headers.get(CSRF_HEADER, "")
            if not hmac.compare_digest(given.encode(), session.csrf_token.encode()):
                raise CSRF_TOKEN_INVALID(
                    f"Send the {CSRF_HEADER} header returned at sign-in with every request "
                    "that changes something.",
                )
        return principal_of(session)
    raise unauthorized(
        "Send the admin token as 'Authorization: Bearer <token>', or sign in to the web UI."
    )


CurrentPrincipal = Annotated[Principal, Depends(require_auth)]


async def require_member(request: Request, principal: CurrentPrincipal) -> Principal:
    """For routers whose routes are all about one channel (``{channel_id}``):
    403 ``NOT_A_MEMBER`` for an operator who is not a member of it."""
    channel_id = request.path_params.get("channel_id")
    if channel_id is not None:
        principal.require_channel(channel_id)
    return principal


async def require_admin(principal: CurrentPrincipal) -> Principal:
    principal.require_admin()
    return principal
