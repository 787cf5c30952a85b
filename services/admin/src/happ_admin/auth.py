"""Bearer-token authentication for every ``/api`` route, compared in constant time."""

from __future__ import annotations

import hmac

from fastapi import Request

from happ_common.errors import HappError


def _unauthorized(message: str) -> HappError:
    return HappError(401, "UNAUTHORIZED", message, headers={"WWW-Authenticate": "Bearer"})


async def require_token(request: Request) -> None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("Send the admin token as 'Authorization: Bearer <token>'.")
    given = token.strip().encode()
    ok = False
    for expected in request.app.state.tokens:
        ok |= hmac.compare_digest(expected.encode(), given)
    if not ok:
        raise _unauthorized(
            "The admin token is not valid; use a token configured in HAPP_ADMIN_TOKEN."
        )
