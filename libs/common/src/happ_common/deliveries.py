"""Where each reply's delivery stands: one small document per reply.

The delivery service writes it, the admin API reads it (and resets it for a
resend). It is kept apart from the reply's message document on purpose: the
embedded database runs every update in a transaction of its own, so a status
update on ``messages`` ran at ~1,200-1,700/s in bulk, below what one delivery
process sends, while ``insert_many`` into a collection with only its ``_id``
ran at ~13,000-29,000 documents/s (``make bench-db``). So a reply's first
outcome is an insert, and only later attempts and resends are updates.

A reply's first attempt, sent without a claim, is also logged there: its
request-log entry rides in the state's first insert (``first_attempt``) instead
of being a document of its own in ``request_log``, one document fewer per reply.
The admin's request-log reads merge those entries in
(``happ_admin.request_log.repository``); every later attempt, a resend's and a
typing event's are ``request_log`` entries as before.

Replies whose next attempt is scheduled are also listed in ``pending_retries``
(by partition), so a delivery member that takes a partition over can close
those conversations' gates before it handles anything. Only failing deliveries
touch that collection.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict
from pymongo.asynchronous.database import AsyncDatabase

from happ_common.mongo import DELIVERIES, PENDING_RETRIES, Document

# "sending": an attempt was claimed and may be on the wire; a member that finds
# it so after a crash repeats that attempt (same delivery id). Shown as
# "pending" outside the delivery service.
DeliveryStatus = Literal["pending", "sending", "delivered", "retrying", "failed", "canceled"]
SERIES_ENDED: tuple[DeliveryStatus, ...] = ("delivered", "failed", "canceled")
# A resend's claim older than this without its series begun is taken to be
# stranded (DeliveryState.stranded). Longer than a claim and its publish take
# (the publish times out within 10 s); shorter than a bulk recovery's lock
# outlives its last beat, so a recovery taking over a dead one's lock finds
# every claim the dead one left stranded and queues its conversations in order
# (tests/test_recovery.py). A queued resend merely waiting its turn that long
# is queued a second time, which is harmless: the second finds the series begun.
STRANDED_CLAIM_S = 30.0


def delivery_id(channel_id: str, reply_id: str) -> str:
    """The ``_id`` of a reply's documents in ``deliveries`` and ``pending_retries``."""
    return f"{channel_id}/{reply_id}"


# The field of a delivery state holding its first attempt's request-log entry,
# and the prefix of that entry's id.
FIRST_ATTEMPT = "first_attempt"
_FIRST_ATTEMPT_ID = "att1_"
# A state read leaves the entry's bodies (up to ~20 KB) on the server.
_STATE_ONLY = {FIRST_ATTEMPT: 0}


def first_attempt_log_id(channel_id: str, reply_id: str, unique: str) -> str:
    """The id of a first attempt's entry kept in its delivery state: it names
    the state, so the entry is found by id without an index of its own;
    ``unique`` tells this attempt's entry from another member's sending of it."""
    return f"{_FIRST_ATTEMPT_ID}{channel_id}.{reply_id}.{unique}"


def delivery_of_log_id(log_id: str) -> str | None:
    """The ``_id`` of the delivery state a first attempt's entry is kept in;
    None for an entry of ``request_log``."""
    if not log_id.startswith(_FIRST_ATTEMPT_ID):
        return None
    channel_id, _, rest = log_id.removeprefix(_FIRST_ATTEMPT_ID).partition(".")
    reply_id, _, unique = rest.partition(".")
    return delivery_id(channel_id, reply_id) if channel_id and reply_id and unique else None


class DeliveryState(BaseModel):
    """A reply's delivery: the status of its current series and its last attempt."""

    model_config = ConfigDict(extra="ignore")

    status: DeliveryStatus = "pending"
    attempts: int = 0
    # Of ``attempts``, those answered with a Retry-After honoured as a pause:
    # they do not count against the series' limit.
    pauses: int = 0
    last_status_code: int | None = None
    last_error_code: str | None = None
    last_attempt_at: datetime | None = None
    delivered_at: datetime | None = None
    next_attempt_at: datetime | None = None
    updated_at: datetime | None = None
    # When an operator's resend (or a recovery) claimed the reply for a new series.
    resend_requested_at: datetime | None = None

    @property
    def shown_status(self) -> DeliveryStatus:
        return "pending" if self.status == "sending" else self.status

    def stranded(self, now: datetime) -> bool:
        """Claimed for a resend long enough ago that its event may never have
        been published: the claimer died between its claim and its publish.
        Such a claim may be taken again, and the resend queued again: should the
        first event be on the log after all, whichever of the two comes second
        finds the series begun and is skipped, as a redelivered record is."""
        return (
            self.status == "pending"
            and self.attempts == 0
            and self.resend_requested_at is not None
            and (now - self.resend_requested_at).total_seconds() > STRANDED_CLAIM_S
        )


class PendingRetry(BaseModel):
    model_config = ConfigDict(extra="ignore")

    channel_id: str
    sender_id: str
    reply_id: str
    partition: int


class DeliveryStates:
    """Reads of the delivery state, and the admin's resend claim."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._deliveries = db[DELIVERIES]
        self._pending = db[PENDING_RETRIES]

    async def get(self, channel_id: str, reply_id: str) -> DeliveryState | None:
        doc = await self._deliveries.find_one(
            {"_id": delivery_id(channel_id, reply_id)}, _STATE_ONLY
        )
        return DeliveryState.model_validate(doc) if doc else None

    async def many(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], DeliveryState]:
        """The states found for ``(channel_id, reply_id)`` keys; a reply with none
        has not been attempted yet."""
        if not keys:
            return {}
        ids = {delivery_id(c, r): (c, r) for c, r in keys}
        cursor = self._deliveries.find({"_id": {"$in": list(ids)}}, _STATE_ONLY)
        return {ids[d["_id"]]: DeliveryState.model_validate(d) async for d in cursor}

    async def claim_for_resend(
        self, channel_id: str, reply_id: str, from_states: Sequence[DeliveryStatus], now: datetime
    ) -> DeliveryState | None:
        """Move a finished delivery back to ``pending``; the state it had, or None
        if it was not in one of ``from_states`` (still running, never attempted,
        or a concurrent resend won). A stranded claim (``DeliveryState.stranded``)
        is taken again whatever ``from_states`` says.

        Read, then a conditional update on the status and claim just read: a
        compare-and-set, so two resends racing start one series. (A ``$in`` on
        the status inside the filter would make the embedded database scan the
        collection.)"""
        _id = delivery_id(channel_id, reply_id)
        doc = await self._deliveries.find_one({"_id": _id}, _STATE_ONLY)
        if doc is None:
            return None
        previous = DeliveryState.model_validate(doc)
        if previous.status not in from_states and not previous.stranded(now):
            return None
        # The new series counts its attempts from zero: a retry of it is told
        # apart from one already done by its attempt number (delivery service).
        claimed = await self._deliveries.update_one(
            {
                "_id": _id,
                "status": previous.status,
                "attempts": previous.attempts,
                "resend_requested_at": previous.resend_requested_at,
            },
            {
                "$set": {
                    "status": "pending",
                    "attempts": 0,
                    "pauses": 0,
                    "next_attempt_at": None,
                    "resend_requested_at": now,
                    "updated_at": now,
                }
            },
        )
        return previous if claimed.modified_count == 1 else None

    async def restore(
        self, channel_id: str, reply_id: str, previous: DeliveryState, now: datetime
    ) -> None:
        """Undo ``claim_for_resend`` (made at ``now``) when the resend could not
        be queued; a claim another resend has taken since stays theirs."""
        await self._deliveries.update_one(
            {
                "_id": delivery_id(channel_id, reply_id),
                "status": "pending",
                "attempts": 0,
                "resend_requested_at": now,
            },
            {
                "$set": {
                    "status": previous.status,
                    "attempts": previous.attempts,
                    "pauses": previous.pauses,
                    "next_attempt_at": previous.next_attempt_at,
                    "resend_requested_at": previous.resend_requested_at,
                    "updated_at": now,
                }
            },
        )

    async def pending_retries(self, partitions: set[int]) -> list[PendingRetry]:
        """Replies of these partitions whose retry series is still going.

        A ``pending_retries`` entry is removed after its series ends, in a second
        write: one left behind by a crash in between is recognised here by the
        ended state and removed, so it can never hold a conversation back."""
        # No index: the collection holds only the retries now pending, and a
        # partition is taken over rarely; every write to it stays cheap.
        found = [
            (d["_id"], PendingRetry.model_validate(d))
            async for d in self._pending.find({"partition": {"$in": sorted(partitions)}})
        ]
        states = await self.many([(p.channel_id, p.reply_id) for _, p in found])
        stale = [
            _id
            for _id, p in found
            if (s := states.get((p.channel_id, p.reply_id))) and s.status in SERIES_ENDED
        ]
        if stale:
            await self._pending.delete_many({"_id": {"$in": stale}})
        return [p for _id, p in found if _id not in stale]
