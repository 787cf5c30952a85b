"""One log line per change made through the admin API, with the message it concerns.

GET requests change nothing and are many (the UI polls), so only the others are
logged: who resent, replayed, took over or answered what can then be found in
the same logs, by ``message_id``, as the ingress's, assistant's and delivery's
lines about that message (``happ_common.log_context``).
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from happ_common.http_metrics import ResponseStatus
from happ_common.log_context import message_context

log = logging.getLogger("happ_admin.actions")

_READS = frozenset({"GET", "HEAD", "OPTIONS"})


class ActionLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _READS:
            await self.app(scope, receive, send)
            return
        response = ResponseStatus(send)
        try:
            await self.app(scope, receive, response)
        finally:
            route: Any = scope.get("route")
            params: dict[str, Any] = scope.get("path_params") or {}
            with message_context(
                channel_id=params.get("channel_id"),
                conversation_id=params.get("sender_id"),
                message_id=params.get("message_id"),
            ):
                log.info(
                    "%s %s: %d",
                    scope["method"],
                    getattr(route, "path", scope["path"]),
                    response.status,
                )
