"""Sign-in and sign-out of the web UI: a token in, an HttpOnly session cookie out."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request, Response

from happ_admin.auth import SESSION_COOKIE, CurrentPrincipal, Principal, principal_of, unauthorized
from happ_admin.deps import Auth, Settings, Users
from happ_admin.errors import ERRORS
from happ_admin.session.schemas import LoginRequest, SessionOut, SessionUser, TokenLogin
from happ_admin.session.service import Session

router = APIRouter(prefix="/api", tags=["session"], responses=ERRORS)


@router.post(
    "/session", summary="Sign in to the web UI: a username and password, or an admin token"
)
async def sign_in(
    body: LoginRequest,
    *,
    request: Request,
    response: Response,
    auth: Auth,
    users: Users,
    settings: Settings,
) -> SessionOut:
    if isinstance(body, TokenLogin):
        if not auth.token_matches(body.token.strip()):
            raise unauthorized(
                "That token is not valid; use a token configured in HAPP_ADMIN_TOKEN."
            )
        session = await auth.sessions.open(token=body.token.strip())
    else:
        user = await users.authenticate(body.username, body.password)
        if user is None:
            raise unauthorized("Wrong username or password.")
        session = await auth.sessions.open(user=user)
    set_session_cookie(response, session, secure=cookie_is_secure(request, settings.cookie_secure))
    return _session_out(principal_of(session))


@router.get("/session", summary="Who is calling; the UI's CSRF token after a page load")
async def current_session(principal: CurrentPrincipal) -> SessionOut:
    return _session_out(principal)


def _session_out(principal: Principal) -> SessionOut:
    session = principal.session
    return SessionOut(
        authenticated=True,
        via=principal.via,
        csrf_token=session.csrf_token if session else None,
        expires_at=session.expires_at if session else None,
        user=SessionUser(
            id=principal.user_id,
            name=principal.name,
            role=principal.role,
            channels=None if principal.channels is None else sorted(principal.channels),
        ),
    )


@router.delete("/session", status_code=204, summary="Sign out: the session ends everywhere")
async def sign_out(
    principal: CurrentPrincipal, request: Request, auth: Auth, settings: Settings
) -> Response:
    if principal.session is not None:
        await auth.sessions.close(principal.session.id)
    response = Response(status_code=204)
    clear_session_cookie(response, secure=cookie_is_secure(request, settings.cookie_secure))
    return response


def cookie_is_secure(request: Request, configured: bool | None) -> bool:
    return configured if configured is not None else request.url.scheme == "https"


def set_session_cookie(response: Response, session: Session, *, secure: bool) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        session.id,
        max_age=max(1, int((session.expires_at - datetime.now(UTC)).total_seconds())),
        path="/",
        httponly=True,
        samesite="strict",
        secure=secure,
    )


def clear_session_cookie(response: Response, *, secure: bool) -> None:
    response.delete_cookie(
        SESSION_COOKIE, path="/", httponly=True, samesite="strict", secure=secure
    )
