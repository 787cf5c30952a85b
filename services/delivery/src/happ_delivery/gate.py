"""Per-conversation gates: a reply waiting for its retry holds back only the
later replies of its own conversation.

A conversation is closed while one of its replies has a retry series going;
later replies of that conversation wait at ``pass_through`` and go out right
after the series ends (delivered, failed or canceled). Retries themselves do not
wait here: they are keyed apart in the pipeline, so no reply waits for a retry
that waits for it.

The state is this member's knowledge of its own partitions. After a restart or a
rebalance it is rebuilt from MongoDB (``pending_retries`` lists the replies whose
retry is scheduled, with their partition) before any record of the newly
assigned partitions is handled.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from happ_common.ids import ConversationKey


class ConversationMoved(Exception):
    """The conversation's partition was revoked while a reply waited for it:
    the new owner handles that reply, in order."""


@dataclass
class _Closed:
    reply_id: str
    partition: int
    opened: asyncio.Event = field(default_factory=asyncio.Event)
    withdrawn: bool = False


class ConversationGates:
    def __init__(self) -> None:
        self._closed: dict[ConversationKey, _Closed] = {}

    def close(self, key: ConversationKey, reply_id: str, partition: int) -> None:
        if key not in self._closed:
            self._closed[key] = _Closed(reply_id, partition)

    def open(self, key: ConversationKey, reply_id: str) -> None:
        """Open the gate if ``reply_id`` is what closed it."""
        closed = self._closed.get(key)
        if closed is not None and closed.reply_id == reply_id:
            del self._closed[key]
            closed.opened.set()

    def closed_by(self, key: ConversationKey) -> str | None:
        closed = self._closed.get(key)
        return closed.reply_id if closed else None

    async def pass_through(self, key: ConversationKey, reply_id: str) -> None:
        """Wait while another reply of this conversation has a retry series going.

        Raises ``ConversationMoved`` if the partition is revoked meanwhile."""
        while (closed := self._closed.get(key)) is not None and closed.reply_id != reply_id:
            await closed.opened.wait()
            if closed.withdrawn:
                raise ConversationMoved(reply_id)

    def forget_partitions(self, partitions: set[int]) -> None:
        """Revoked partitions: their conversations are another member's now."""
        for key in [k for k, c in self._closed.items() if c.partition in partitions]:
            closed = self._closed.pop(key)
            closed.withdrawn = True
            closed.opened.set()

    def __len__(self) -> int:
        return len(self._closed)
