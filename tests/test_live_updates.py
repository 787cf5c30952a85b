"""The admin's live-update poller reads a burst larger than a page to its end, once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from happ_admin.auth import Principal
from happ_admin.inbox.repository import InboxRepository
from happ_admin.inbox.service import InboxService
from happ_admin.live import LiveUpdates
from happ_common.conversation_state import ConversationDoc


class PagedRepo:
    """``changed_since`` over an in-memory list, with the repository's keyset order."""

    def __init__(self, docs: list[ConversationDoc]) -> None:
        self.docs = docs
        self.calls = 0

    async def changed_since(
        self, since: datetime, after_id: str | None, limit: int
    ) -> list[ConversationDoc]:
        self.calls += 1
        rows = sorted(
            (d for d in self.docs if d.inbox_at is not None),
            key=lambda d: (d.inbox_at, d.id),
        )
        out = [
            d
            for d in rows
            if d.inbox_at is not None
            and (
                d.inbox_at > since
                or (after_id is not None and d.inbox_at == since and d.id > after_id)
            )
        ]
        return out[:limit]

    async def count_waiting(self) -> int:
        return 0


class Names:
    async def channel_names(self, ids: set[str]) -> dict[str, str]:
        return dict.fromkeys(ids, "Channel")


def doc(i: int, at: datetime, channel: str = "cm_a") -> ConversationDoc:
    return ConversationDoc.model_validate(
        {
            "_id": f"{channel}\nu{i:05d}",
            "channel_id": channel,
            "sender_id": f"u{i:05d}",
            "state": "waiting",
            "inbox_at": at,
        }
    )


async def drain(queue: asyncio.Queue[Any]) -> list[Any]:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


async def test_a_burst_of_changes_at_one_instant_is_sent_once_and_the_poller_moves_on() -> None:
    now = datetime.now(UTC) + timedelta(seconds=1)
    repo = PagedRepo([doc(i, now) for i in range(1_234)])
    live = LiveUpdates(
        cast(InboxRepository, repo), cast(InboxService, Names()), poll_s=1, keepalive_s=60
    )
    queue: asyncio.Queue[Any] = asyncio.Queue()
    live._subscribers.add(queue)  # what stream() registers
    await live._look()
    first = await drain(queue)
    assert len(first) == 1_234
    assert len({c.sender_id for c in first}) == 1_234
    await live._look()  # nothing new: nothing sent again
    assert await drain(queue) == []
    repo.docs.append(doc(99_999, now + timedelta(milliseconds=5)))
    await live._look()
    assert [c.sender_id for c in await drain(queue)] == ["u99999"]


async def test_a_stream_shows_only_the_channels_its_user_may_see() -> None:
    repo = PagedRepo(
        [
            # The other channel's change comes first: a stream that did not
            # filter would show it first.
            doc(1, datetime.now(UTC) + timedelta(seconds=1), "cm_other"),
            doc(2, datetime.now(UTC) + timedelta(seconds=2), "cm_mine"),
        ]
    )
    live = LiveUpdates(
        cast(InboxRepository, repo), cast(InboxService, Names()), poll_s=0.05, keepalive_s=60
    )
    operator = Principal(via="cookie", role="operator", channels=frozenset({"cm_mine"}))
    stream = live.stream(operator)
    assert await anext(stream) == "retry: 2000\n\n"
    live.start()
    try:
        event = await asyncio.wait_for(anext(stream), 5)
    finally:
        await live.stop()
        await stream.aclose()
    assert event.startswith("event: conversation\ndata: ")
    assert '"channel_id":"cm_mine"' in event


async def test_a_stream_follows_its_users_memberships_and_ends_with_the_session() -> None:
    repo = PagedRepo([])
    live = LiveUpdates(
        cast(InboxRepository, repo),
        cast(InboxService, Names()),
        poll_s=0.02,
        keepalive_s=60,
        recheck_s=0.05,
    )
    operator = Principal(via="cookie", role="operator", channels=frozenset({"cm_mine"}))
    # What the Authenticator answers when asked again: the memberships change,
    # then the session ends (a disable, a new password, a sign-out).
    answers: list[Principal | None] = [
        Principal(via="cookie", role="operator", channels=frozenset({"cm_mine", "cm_other"})),
    ]

    async def refresh(_: Principal) -> Principal | None:
        return answers[-1]

    stream = live.stream(operator, refresh)
    assert await anext(stream) == "retry: 2000\n\n"
    live.start()
    try:
        await asyncio.sleep(0.2)  # a recheck or two: now a member of cm_other too
        repo.docs.append(doc(1, datetime.now(UTC) + timedelta(seconds=1), "cm_other"))
        event = await asyncio.wait_for(anext(stream), 5)
        assert '"channel_id":"cm_other"' in event
        answers.append(None)
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(anext(stream), 5)
    finally:
        await live.stop()
        await stream.aclose()
