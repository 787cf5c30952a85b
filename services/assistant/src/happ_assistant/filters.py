"""What happens to a user's message before the assistant sees it (SPEC §6a).

``decide`` is a pure function of the channel's rules, the message, who holds
the conversation and the sender's recent pace, so every rule is tested without
a broker. Its order is the channel's promise to the user:

1. ``ignore_senders``: accepted and logged, never answered;
2. a conversation waiting for or held by a person: left for the person (no
   notices from HAPP in a conversation a person holds);
3. ``sender_rate_per_minute``: beyond it, one notice, then silence until the
   window passes (messages silenced do not count toward the window);
4. ``routes``, then ``handoff_keywords``: to the operators;
5. outside ``working_hours``: the off-hours text, else to the operators;
6. ``mode = operators``: to the operators;
7. otherwise the assistant answers (and may still hand off: a tool call, or
   the fallback after the LLM kept failing — decided later, in the service).

Routes, keywords and the operator queue need people: a channel in ``assistant``
mode has none, so there they do not apply.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from happ_common.channels import ConversationRules, contains_phrase
from happ_common.conversation_state import ConversationState, HandoffTrigger
from happ_common.messages import Outcome, StoredMessage

RATE_WINDOW = timedelta(minutes=1)
Pace = Literal["ok", "notice", "silent"]


@dataclass
class RateWindow:
    """One sender's messages of the last minute, in the instance that owns the
    conversation (its partition's single writer). Rebuilt from the loaded history
    when the conversation is read from the database again, so a limit above the
    history kept in memory may let a few more through after a rebalance."""

    times: deque[datetime] = field(default_factory=deque)
    noticed_at: datetime | None = None

    @classmethod
    def seeded(cls, messages: Iterable[StoredMessage]) -> RateWindow:
        window = cls()
        for m in messages:
            if m.role != "user" or m.handling is None:
                continue  # not decided yet: the message being handled again
            if m.handling.outcome == "rate_notice":
                window.noticed_at = m.created_at
            elif m.handling.outcome != "rate_limited":
                window.times.append(m.created_at)
        return window

    def pace(self, at: datetime, limit: int) -> Pace:
        """Counts a message at ``at`` against ``limit`` per minute."""
        while self.times and self.times[0] <= at - RATE_WINDOW:
            self.times.popleft()
        if len(self.times) < limit:
            self.times.append(at)
            return "ok"
        if self.noticed_at is not None and self.noticed_at > at - RATE_WINDOW:
            return "silent"
        self.noticed_at = at
        return "notice"


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    trigger: str | None = None
    # Move the conversation to the operators, for this reason.
    handoff: HandoffTrigger | None = None
    # A text HAPP itself sends (the rate notice, the off-hours text).
    notice: str | None = None

    @property
    def assistant_answers(self) -> bool:
        return self.outcome == "answered"


ANSWER = Decision("answered")


def decide(
    rules: ConversationRules,
    *,
    sender_id: str,
    text: str,
    at: datetime,
    state: ConversationState | None,
    rate: RateWindow,
) -> Decision:
    if sender_id in rules.ignore_senders:
        return Decision("ignored", "ignore_senders")
    people = rules.has_operators
    if people and state in ("waiting", "operator"):
        return Decision("for_operator", f"conversation:{state}")
    if rules.sender_rate_per_minute is not None:
        pace = rate.pace(at, rules.sender_rate_per_minute)
        if pace == "notice":
            return Decision("rate_notice", "sender_rate_per_minute", notice=rules.rate_notice_text)
        if pace == "silent":
            return Decision("rate_limited", "sender_rate_per_minute")
    if people:
        for route in rules.routes:
            if route.matches(text):
                return Decision("handoff", f"route:{route.pattern}", handoff="route")
    if rules.mode == "assistant_with_handoff":
        for keyword in rules.handoff_keywords:
            if contains_phrase(text, keyword):
                return Decision("handoff", f"keyword:{keyword}", handoff="keyword")
    if rules.working_hours is not None and not rules.working_hours.is_open(at):
        if rules.off_hours_text:
            return Decision("off_hours", "working_hours", notice=rules.off_hours_text)
        if people:
            return Decision("handoff", "working_hours", handoff="off_hours")
    if rules.mode == "operators":
        return Decision("handoff", "mode", handoff="mode")
    return ANSWER
