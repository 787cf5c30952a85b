"""Live updates for the web UI: conversations as they change, as Server-Sent Events.

One poller per admin process reads what changed for the operators in
``conversations`` since its last look (an indexed range on ``inbox_at``, which
handoffs, messages for people and what people do move, and ordinary AI traffic
does not; every ``live_poll_s``) and fans
it out to every open stream, so a hundred open inboxes cost one query, not a
hundred. Each stream keeps only the conversations its user may see. Polling,
not a change stream: it works the same on the embedded database and on a
MongoDB without a replica set, and what changes is a handful of documents.

A stream that cannot keep up (its queue full) is closed; the browser's
EventSource reconnects and the UI reloads its lists.

A stream outlives the request that checked who opened it, so every
``recheck_s`` it asks again (``refresh``): it ends once the session has (signed
out, the user disabled, removed or given a new password), and follows the
user's memberships as an admin changes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

from prometheus_client import Gauge

from happ_admin.auth import Principal
from happ_admin.inbox.repository import InboxRepository
from happ_admin.inbox.schemas import InboxConversation
from happ_admin.inbox.service import InboxService
from happ_common.conversation_state import ConversationDoc

log = logging.getLogger(__name__)

WAITING = Gauge("happ_conversations_waiting", "Conversations waiting for a person")
STREAMS = Gauge("happ_admin_live_streams", "Open live-update streams (GET /api/events)")

# Other services write updated_at with their own clocks, a little apart from
# ours: each look reaches this far back and skips what it sent already.
_OVERLAP = timedelta(seconds=2)
_QUEUE = 1000
_BATCH = 500
_PAGES = 20
_RECHECK_S = 5.0

Refresh = Callable[[Principal], Awaitable[Principal | None]]


class LiveUpdates:
    def __init__(
        self,
        repo: InboxRepository,
        inbox: InboxService,
        *,
        poll_s: float,
        keepalive_s: float,
        recheck_s: float = _RECHECK_S,
    ) -> None:
        self._repo = repo
        self._inbox = inbox
        self._poll_s = poll_s
        self._keepalive_s = keepalive_s
        self._recheck_s = recheck_s
        self._subscribers: set[asyncio.Queue[InboxConversation | None]] = set()
        self._sent: dict[str, datetime] = {}
        self._since = datetime.now(UTC)
        self._task: asyncio.Task[None] | None = None
        self._last_count = 0.0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="live-updates")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for queue in self._subscribers:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)

    async def stream(
        self, principal: Principal, refresh: Refresh | None = None
    ) -> AsyncGenerator[str, None]:
        queue: asyncio.Queue[InboxConversation | None] = asyncio.Queue(_QUEUE)
        self._subscribers.add(queue)
        STREAMS.set(len(self._subscribers))
        loop = asyncio.get_running_loop()
        checked = said = loop.time()
        try:
            yield "retry: 2000\n\n"
            while True:
                item: InboxConversation | None = None
                try:
                    wait = min(self._keepalive_s - (loop.time() - said), self._recheck_s)
                    item = await asyncio.wait_for(queue.get(), max(wait, 0.01))
                    if item is None:
                        return  # overflowed or shutting down: the browser reconnects
                except TimeoutError:
                    pass
                if refresh is not None and loop.time() - checked >= self._recheck_s:
                    checked = loop.time()
                    try:
                        now = await refresh(principal)
                    except Exception as exc:  # the database is away: end; it reconnects
                        log.warning("live updates: checking a stream's session: %s", exc)
                        return
                    if now is None:
                        return  # the session has ended
                    principal = now
                if item is not None and principal.can_access(item.channel_id):
                    said = loop.time()
                    yield f"event: conversation\ndata: {item.model_dump_json()}\n\n"
                elif loop.time() - said >= self._keepalive_s:
                    said = loop.time()
                    yield ": keepalive\n\n"
        finally:
            self._subscribers.discard(queue)
            STREAMS.set(len(self._subscribers))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                await self._look()
                if loop.time() - self._last_count > 10:
                    self._last_count = loop.time()
                    WAITING.set(await self._repo.count_waiting())
            except Exception as exc:  # the database is away: look again later
                log.warning("live updates: %s", exc)
            await asyncio.sleep(self._poll_s)

    async def _look(self) -> None:
        """Everything changed since the last look, page by page: a burst larger than
        a page is read to its end, never re-read forever."""
        since, after_id = self._since - _OVERLAP, None
        for _ in range(_PAGES):
            page = await self._repo.changed_since(since, after_id, _BATCH)
            fresh = [d for d in page if d.inbox_at and self._sent.get(d.id) != d.inbox_at]
            if fresh and self._subscribers:
                names = await self._inbox.channel_names({d.channel_id for d in fresh})
                for d in fresh:
                    self._publish(InboxConversation.of(d, names.get(d.channel_id)))
            for d in fresh:
                self._remember(d)
            if page and page[-1].inbox_at is not None:
                since, after_id = page[-1].inbox_at, page[-1].id
                self._since = max(self._since, since)
            if len(page) < _BATCH:
                break
        horizon = self._since - 2 * _OVERLAP
        self._sent = {k: v for k, v in self._sent.items() if v > horizon}

    def _remember(self, doc: ConversationDoc) -> None:
        if doc.inbox_at is not None:
            self._sent[doc.id] = doc.inbox_at

    def _publish(self, item: InboxConversation) -> None:
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(item)
            except asyncio.QueueFull:
                self._subscribers.discard(queue)
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
                queue.put_nowait(None)
