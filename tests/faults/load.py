"""A steady load through the real webhook, as an integrator sends it.

Each conversation sends its messages one after another (the next only once the
previous one was accepted), so a conversation's acceptance order is the order
its replies must arrive in. A 200 (accepted or duplicate) means HAPP owns the
message; a 503, 429, 5xx or a broken connection is retried with the same
``message_id``, as an integrator does, until ``give_up_s`` has passed.

The text of every message is its own ``message_id``: the fake LLM counts its
calls by it and the reply text (``Echo: <message_id> [call N]``) names it.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx


@dataclass(frozen=True)
class Accepted:
    message_id: str
    load: str
    conversation: str
    seq: int  # the message's place in its conversation
    at: float  # time.time() when the 200 came back


def seq_of(message_id: str) -> int:
    """The place of a message in its conversation, from its id."""
    return int(message_id.rsplit("-m", 1)[1])


@dataclass
class Load:
    """``conversations`` conversations on one channel, ``per_conversation``
    messages each, ``rate`` messages/s in all (a conversation catching up after
    an outage sends at most twice its own rate)."""

    name: str  # unique in a scenario: it prefixes sender and message ids
    webhook_url: str
    conversations: int
    per_conversation: int
    rate: float
    give_up_s: float = 90.0
    accepted: dict[str, Accepted] = field(default_factory=dict)
    gave_up: list[str] = field(default_factory=list)
    refused: list[tuple[str, int, str]] = field(default_factory=list)  # 4xx: a bug, not a fault
    retries: Counter[str] = field(default_factory=Counter)  # retried answers, by kind

    @property
    def total(self) -> int:
        return self.conversations * self.per_conversation

    async def run(self, http: httpx.AsyncClient) -> None:
        started = time.monotonic()
        await asyncio.gather(
            *(self._conversation(http, c, started) for c in range(self.conversations))
        )

    async def _conversation(self, http: httpx.AsyncClient, c: int, started: float) -> None:
        interval = self.conversations / self.rate
        first = started + c * interval / self.conversations
        last_sent = 0.0
        for seq in range(self.per_conversation):
            due = max(first + seq * interval, last_sent + interval / 2)
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            last_sent = time.monotonic()
            sender = f"{self.name}-c{c:02d}"
            await self._send(http, sender, f"{sender}-m{seq:04d}", seq)

    async def _send(self, http: httpx.AsyncClient, sender: str, message_id: str, seq: int) -> None:
        body = {"sender_id": sender, "text": message_id, "message_id": message_id}
        deadline = time.monotonic() + self.give_up_s
        while True:
            pause = 0.5
            try:
                resp = await http.post(self.webhook_url, json=body, timeout=10)
            except httpx.TransportError as exc:
                self.retries[type(exc).__name__] += 1
            else:
                if resp.status_code == 200:
                    self.accepted[message_id] = Accepted(
                        message_id, self.name, sender, seq, time.time()
                    )
                    return
                if resp.status_code in (429, 503) or resp.status_code >= 500:
                    self.retries[f"HTTP {resp.status_code}"] += 1
                    pause = min(1.0, float(resp.headers.get("Retry-After", pause)))
                else:
                    self.refused.append((message_id, resp.status_code, resp.text[:200]))
                    return
            if time.monotonic() + pause > deadline:
                self.gave_up.append(message_id)
                return
            await asyncio.sleep(pause)
