"""Who holds a conversation (SPEC §6a), on its document in ``conversations``.

Two services change it: the admin API (an operator takes, hands back, closes)
and the assistant (a handoff trigger moves it to ``waiting``; an AI reply is
committed only while the assistant holds it). Both change it with one
conditional update on the one document, so the database decides every race:
the assistant's *claim* of a message (``claim_filter``) and an operator's Take
over cannot both win, and a message is answered by the AI or left for a person,
never both.

A document from before states existed has no ``state``: it is the assistant's.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field

from happ_common.events import Author
from happ_common.ids import conversation_id
from happ_common.mongo import Document

ConversationState = Literal["assistant", "waiting", "operator", "closed"]
# What the assistant may answer: its own, and closed ones (a new message reopens them).
ASSISTANT_STATES: list[ConversationState | None] = [None, "assistant", "closed"]
PEOPLE_STATES: tuple[ConversationState, ...] = ("waiting", "operator")
# How a conversation reached the operators; also the label of happ_handoffs_total.
HandoffTrigger = Literal["keyword", "route", "tool", "fallback", "mode", "off_hours", "operator"]
# Counted where the handoff happens: the assistant (rules, tool, fallback) or the
# admin API (an operator's Take over).
HANDOFFS = Counter(
    "happ_handoffs_total", "Conversations moved to the operators, by what moved them", ["trigger"]
)


class ConversationDoc(BaseModel):
    """The fields of a ``conversations`` document the services read."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    id: str = Field(alias="_id")
    channel_id: str
    sender_id: str
    sender_name: str | None = None
    state: ConversationState = "assistant"
    operator: Author | None = None
    unread: int = 0
    first_message_at: datetime | None = None
    last_message_at: datetime | None = None
    handoff_at: datetime | None = None
    handoff_trigger: str | None = None
    # The user's message that handed it over, so its redelivery (after a crash
    # between this write and the handoff event's) still tells the user.
    handoff_by: str | None = None
    # Set at a handoff, cleared by the first operator reply after it.
    awaiting_operator_since: datetime | None = None
    last_text: str | None = None
    # Changed for the operators' eyes (a handoff, a message for them, what a
    # person did): what the admin's live updates follow.
    inbox_at: datetime | None = None
    # Messages the webhook accepted before this were sent to the person who held
    # the conversation: they stay theirs even if the assistant reads them later.
    handed_back_at: datetime | None = None
    updated_at: datetime | None = None


def left_for_people(doc: ConversationDoc | None, received_at: datetime) -> bool:
    """Whether a message received at ``received_at`` is the people's to answer."""
    if doc is None:
        return False
    if doc.state in PEOPLE_STATES:
        return True
    back = doc.handed_back_at
    if back is None:
        return False
    if received_at.tzinfo is None:
        received_at = received_at.replace(tzinfo=UTC)
    if back.tzinfo is None:
        back = back.replace(tzinfo=UTC)
    return received_at < back


def claim_filter(channel_id: str, sender_id: str) -> Document:
    """Matches while the assistant may answer: the conversation is its own (or closed)."""
    return {
        "_id": conversation_id(channel_id, sender_id),
        "state": {"$in": ASSISTANT_STATES},
    }


def claim_update(message_id: str, at: datetime, handoff: HandoffTrigger | None) -> Document:
    """The claim of ``message_id`` by the assistant; with ``handoff``, the same write
    hands the conversation to the operators (a tool call or the fallback)."""
    fields: Document = {"claim": message_id, "updated_at": at}
    if handoff is None:
        fields["state"] = "assistant"
    else:
        fields.update(waiting_fields(handoff, at, message_id))
    return {"$set": fields}


def waiting_fields(trigger: HandoffTrigger, at: datetime, message_id: str | None) -> Document:
    return {
        "state": "waiting",
        "operator": None,
        "handoff_at": at,
        "handoff_trigger": trigger,
        "handoff_by": message_id,
        "awaiting_operator_since": at,
        "updated_at": at,
        "inbox_at": at,
    }


def handed_over_by(doc: ConversationDoc | None, message_id: str) -> HandoffTrigger | None:
    """The trigger, if ``message_id`` moved this conversation to ``waiting`` and
    nobody has taken it since (its handling was then cut short)."""
    if doc is None or doc.state != "waiting" or doc.handoff_by != message_id:
        return None
    trigger = doc.handoff_trigger
    return trigger if trigger in AUTOMATIC_TRIGGERS else None  # type: ignore[return-value]


AUTOMATIC_TRIGGERS = ("keyword", "route", "mode", "off_hours", "tool", "fallback")
# Decided with the model's answer, in the assistant's claim of the message.
ANSWER_TRIGGERS = ("tool", "fallback")
