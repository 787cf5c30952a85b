"""The web UI: plain HTML, CSS and JavaScript modules, no build step.

The page carries no data and no token: the script signs in through
``/api/session`` and reads everything from the same JSON API that operators
script against, so the UI can do nothing the API cannot. The script is a set of
ES modules (``static/js/``, one per page plus shared helpers) the browser loads
itself, from this origin only.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATIC_DIR = Path(__file__).resolve().parent / "static"

# Module scripts must come with a JavaScript type (with nosniff the browser
# refuses anything else); some systems' mime tables map .js differently.
mimetypes.add_type("text/javascript", ".js")

# Scripts and styles only from this origin, nothing inline, no framing: an
# injected string can neither run nor restyle the page.
UI_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)

router = APIRouter(include_in_schema=False)


@router.get("/")
async def index() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


def mount_ui(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")


class SecurityHeaders:
    """Headers for every response: no sniffing, no framing, no referrer; no
    caching of API answers (they hold secrets); a strict CSP on the UI, whose
    files are revalidated on each load."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        extra = [
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
            (b"x-frame-options", b"DENY"),
        ]
        if path.startswith("/api/"):
            extra.append((b"cache-control", b"no-store"))
        elif path == "/" or path.startswith("/static/"):
            extra.append((b"content-security-policy", UI_CSP.encode()))
            # Revalidate (a cheap 304): after an upgrade the modules never mix versions.
            extra.append((b"cache-control", b"no-cache"))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [
                    *message.get("headers", []),
                    *((n, v) for n, v in extra if n not in present),
                ]
            await send(message)

        await self.app(scope, receive, send_with_headers)
