"""Channels: the stored model, its repository, and the in-memory cache hot paths read.

Ingress, assistant and delivery read a channel on every message; they read it
from ``ChannelCache``, which goes to MongoDB at most once per channel per
``HAPP_CHANNEL_CACHE_TTL_S`` (1 s by default), so an operator's change reaches
every replica within that time plus one read.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import re
import time
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    field_validator,
    model_validator,
)
from pymongo.asynchronous.database import AsyncDatabase

from happ_common.mongo import CHANNELS, Document

log = logging.getLogger(__name__)

ChannelStatus = Literal["connected", "disconnected"]
# Who answers (SPEC §6a): the AI alone, people alone, or the AI until a handoff.
ChannelMode = Literal["assistant", "operators", "assistant_with_handoff"]
# How replies leave (SPEC §3a): POSTed to the outgoing URL, returned in the
# webhook's response (``Prefer: wait``) and kept for ``GET /webhook/{id}/replies``,
# or both. The wait is honoured only in ``response`` and ``both``, so an
# ``endpoint`` channel behaves exactly as before.
DeliveryMode = Literal["endpoint", "response", "both"]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

DEFAULT_SYSTEM_PROMPT = "You are a helpful, concise assistant answering users of this platform."
DEFAULT_FALLBACK_TEXT = "Sorry, I can't answer right now. Please try again in a few minutes."
DEFAULT_HANDOFF_TEXT = "Connecting you to a person. Please stay with us."
DEFAULT_RATE_NOTICE_TEXT = (
    "You are sending messages faster than we can answer them. "
    "Please wait a minute before writing again."
)
CLOCK_PATTERN = r"^(?:[01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$"
_CLOCK_RE = re.compile(CLOCK_PATTERN)
# The time zones of the tzdata package (a dependency, so every service and
# image has them): the JSON schema lists them, and no other name is accepted.
TIME_ZONES = frozenset(resources.files("tzdata").joinpath("zones").read_text().split())

# Python's whitespace (what str.strip() removes), spelled out so that JSON
# Schema, pydantic and Python regular expressions read it alike: a string with
# a character outside it is still non-empty once stripped.
_SPACE = r"\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
NOT_BLANK_PATTERN = f"[^{_SPACE}]"
_NOT_BLANK = re.compile(NOT_BLANK_PATTERN)


def stripped(value: str) -> str:
    if _NOT_BLANK.search(value) is None:
        raise ValueError("must not be blank")
    return value.strip()


def trimmed(max_length: int) -> Any:
    """Metadata of a string that must not be blank and is stored stripped: the
    length limits apply to the string as sent."""
    return Field(
        min_length=1, max_length=max_length, json_schema_extra={"pattern": NOT_BLANK_PATTERN}
    )


# A keyword or a sender id in a channel's rules: 1-256 characters, not blank.
RuleItem = Annotated[str, trimmed(256), AfterValidator(stripped)]
NoticeText = Annotated[str, Field(min_length=1, max_length=4_000)]


def _integral(value: object) -> object:
    return int(value) if isinstance(value, float) and value.is_integer() else value


# With ``int``: an integer as JSON Schema means one, 3 or 3.0 but never "3" or
# true (request models are strict, and strict pydantic refuses 3.0). After the
# bounds, so that they stay in the JSON schema.
Integral = BeforeValidator(_integral)
SenderRate = Annotated[int, Field(ge=1, le=10_000), Integral]
HistoryLength = Annotated[int, Field(ge=0, le=200), Integral]


class AssistantSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    system_prompt: str = Field(default=DEFAULT_SYSTEM_PROMPT, max_length=20_000)
    model: str | None = Field(default=None, max_length=200)
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    max_history: HistoryLength = 20
    fallback_text: str = Field(default=DEFAULT_FALLBACK_TEXT, min_length=1, max_length=4_000)


class Route(BaseModel):
    """A routing rule: a message it matches goes straight to the operators."""

    model_config = ConfigDict(extra="forbid", strict=True)

    match: Literal["keyword", "regex"] = "keyword"
    pattern: str = Field(min_length=1, max_length=500)

    @model_validator(mode="after")
    def _compiles(self) -> Route:
        if self.match == "regex":
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return self

    def matches(self, text: str) -> bool:
        if self.match == "regex":
            return re.search(self.pattern, text, re.IGNORECASE) is not None
        return contains_phrase(text, self.pattern)


def contains_phrase(text: str, phrase: str) -> bool:
    """Whether ``phrase`` occurs in ``text`` as whole words, case-insensitively."""
    words = r"\s+".join(re.escape(w) for w in phrase.split())
    return bool(words) and re.search(rf"(?<!\w){words}(?!\w)", text, re.IGNORECASE) is not None


class WorkingInterval(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    days: list[Weekday] = Field(min_length=1, max_length=7)
    start: str = Field(
        description="HH:MM, local time", json_schema_extra={"pattern": CLOCK_PATTERN}
    )
    end: str = Field(
        description="HH:MM (24:00 for midnight), after start",
        json_schema_extra={"pattern": CLOCK_PATTERN},
    )

    @field_validator("start", "end")
    @classmethod
    def _clock(cls, value: str) -> str:
        if not _CLOCK_RE.fullmatch(value):
            raise ValueError("use HH:MM between 00:00 and 24:00")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> WorkingInterval:
        if self.end <= self.start:
            raise ValueError("end must be after start (split an interval that crosses midnight)")
        return self


class WorkingHours(BaseModel):
    """When people are at work, in the channel's time zone."""

    model_config = ConfigDict(extra="forbid", strict=True)

    timezone: str = Field(
        examples=["Europe/Kyiv"],
        description="An IANA time zone name.",
        json_schema_extra={"enum": list[JsonValue](sorted(TIME_ZONES))},
    )
    intervals: list[WorkingInterval] = Field(min_length=1, max_length=50)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        if value not in TIME_ZONES:
            raise ValueError("not an IANA time zone name such as 'Europe/Kyiv'")
        return value

    def is_open(self, at: datetime) -> bool:
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        local = at.astimezone(ZoneInfo(self.timezone))
        day = WEEKDAYS[local.weekday()]
        clock = local.strftime("%H:%M")
        return any(day in i.days and i.start <= clock < i.end for i in self.intervals)


class ConversationRules(BaseModel):
    """Who answers a channel's users, and the filters applied before the assistant
    (SPEC §6a). Top-level fields of a channel."""

    model_config = ConfigDict(extra="forbid")

    mode: ChannelMode = "assistant"
    handoff_keywords: list[RuleItem] = Field(default_factory=list, max_length=100)
    handoff_text: NoticeText = DEFAULT_HANDOFF_TEXT
    ignore_senders: list[RuleItem] = Field(default_factory=list, max_length=10_000)
    routes: list[Route] = Field(default_factory=list, max_length=100)
    working_hours: WorkingHours | None = None
    off_hours_text: NoticeText | None = None
    sender_rate_per_minute: SenderRate | None = None
    rate_notice_text: NoticeText = DEFAULT_RATE_NOTICE_TEXT

    @field_validator("handoff_keywords", "ignore_senders")
    @classmethod
    def _once_each(cls, values: list[str]) -> list[str]:
        return list(dict.fromkeys(values))

    @property
    def has_operators(self) -> bool:
        return self.mode != "assistant"


RULE_FIELDS = tuple(ConversationRules.model_fields)


class DeliveriesDisabled(BaseModel):
    """Why a channel's deliveries are off (``happ_common.endpoint_health``)."""

    model_config = ConfigDict(extra="ignore")

    at: datetime
    reason: Literal["endpoint_failing"] = "endpoint_failing"
    message: str
    # The first failed attempt of the run of failures that led to it.
    failing_since: datetime
    last_error_code: str | None = None


class Channel(ConversationRules):
    """A channel as stored (``_id`` is the channel id)."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True, extra="ignore")

    id: str = Field(alias="_id")
    name: str
    status: ChannelStatus = "connected"
    # "" only for a channel with ``delivery: response``, which never POSTs.
    outgoing_url: str = ""
    delivery: DeliveryMode = "endpoint"
    hmac_secret: str
    previous_secret: str | None = None
    previous_secret_expires_at: datetime | None = None
    require_signature: bool = False
    rate_limit_per_second: int = 100
    assistant: AssistantSettings = Field(default_factory=AssistantSettings)
    # Added to every POST to the endpoint (``custom_headers``); write-only
    # through the admin API, never in the request log.
    outgoing_headers: dict[str, str] = Field(default_factory=dict)
    # Opt-in: a best-effort "typing" event before each answer the model writes.
    typing_events: bool = False
    # The pace of POSTs to the endpoint, summed over every delivery replica
    # (happ_delivery.pace): at most this many per second (0: no cap), and at
    # most this many at once (0: HAPP_DELIVERY_MAX_CONNECTIONS_PER_CHANNEL).
    outgoing_rate_per_second: int = 0
    outgoing_max_concurrency: int = 0
    created_at: datetime
    updated_at: datetime
    # Written by the delivery service on outcome changes only
    # (happ_common.endpoint_health); cleared by a connect.
    endpoint_failing_since: datetime | None = None
    deliveries_disabled: DeliveriesDisabled | None = None
    # Until then the webhook refuses new messages (429): replies wait in a
    # delivery member faster than the endpoint takes them (happ_delivery.backlog).
    replies_backlogged_until: datetime | None = None

    @property
    def posts_replies(self) -> bool:
        return self.delivery != "response"

    @property
    def answers_in_response(self) -> bool:
        return self.delivery != "endpoint"

    def previous_secrets(self, now: datetime | None = None) -> list[str]:
        """Secrets still honoured besides the current one (rotation overlap)."""
        now = now or datetime.now(UTC)
        if (
            self.previous_secret
            and self.previous_secret_expires_at
            and (self.previous_secret_expires_at > now)
        ):
            return [self.previous_secret]
        return []

    def verifying_secrets(self, now: datetime | None = None) -> list[str]:
        return [self.hmac_secret, *self.previous_secrets(now)]

    def to_document(self) -> Document:
        return self.model_dump(by_alias=True)


def rotation_expiry(overlap_hours: float) -> datetime:
    return datetime.now(UTC) + timedelta(hours=overlap_hours)


class ChannelRepository:
    """Queries on the ``channels`` collection, nothing else."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._coll = db[CHANNELS]

    async def get(self, channel_id: str) -> Channel | None:
        doc = await self._coll.find_one({"_id": channel_id})
        return Channel.model_validate(doc) if doc else None

    async def insert(self, channel: Channel) -> None:
        await self._coll.insert_one(channel.to_document())

    async def ids(self) -> list[str]:
        """Every channel's id (channels are never deleted, only disconnected)."""
        return [d["_id"] async for d in self._coll.find({}, {"_id": 1})]

    async def list(
        self, *, after: str | None, limit: int, only: frozenset[str] | None = None
    ) -> list[Channel]:
        """Channels by id; ``only``: of these ids (an operator's memberships)."""
        query: Document = {"_id": {"$gt": after}} if after else {}
        if only is not None:
            query = {"_id": {**query.get("_id", {}), "$in": sorted(only)}}
        cursor = self._coll.find(query).sort("_id", 1).limit(limit)
        return [Channel.model_validate(d) async for d in cursor]

    async def update(self, channel_id: str, fields: Document) -> Channel | None:
        fields = {**fields, "updated_at": datetime.now(UTC)}
        doc = await self._coll.find_one_and_update(
            {"_id": channel_id}, {"$set": fields}, return_document=True
        )
        return Channel.model_validate(doc) if doc else None


class ChannelCache:
    """Channel reads for hot paths: at most two database reads per channel per TTL.

    Concurrent misses for one channel share a single read, and unknown ids are
    cached too, so a flood of requests to a bogus channel cannot flood MongoDB.

    An entry is never served past its TTL, but one read in its second half
    refreshes it in the background: a busy channel's entry is renewed before it
    expires, so its requests never wait on the database (while the embedded
    database is busy inserting a request-log batch, that once-a-second wait was
    the ingress's p99). A quiet channel's expired entry is read on its next use.
    """

    def __init__(self, repo: ChannelRepository, ttl_s: float) -> None:
        self._repo = repo
        self._ttl = ttl_s
        self._entries: dict[str, tuple[float, Channel | None]] = {}
        self._loading: dict[str, asyncio.Future[Channel | None]] = {}
        self._refreshing: set[asyncio.Task[None]] = set()

    async def get(self, channel_id: str, *, fresh: bool = False) -> Channel | None:
        """The channel, at most TTL old; ``fresh`` reads the database now (for
        decisions that cannot be undone, such as canceling a reply)."""
        entry = self._entries.get(channel_id)
        if not fresh and entry is not None:
            age = time.monotonic() - entry[0]
            if age < self._ttl:
                if age > self._ttl / 2 and channel_id not in self._loading:
                    # Not as part of the message that happened to find the entry
                    # stale (its log fields, its trace).
                    task = asyncio.create_task(
                        self._refresh(channel_id), context=contextvars.Context()
                    )
                    self._refreshing.add(task)
                    task.add_done_callback(self._refreshing.discard)
                return entry[1]
        pending = self._loading.get(channel_id)
        if pending is not None:
            return await asyncio.shield(pending)
        return await self._load(channel_id)

    async def _refresh(self, channel_id: str) -> None:
        if channel_id in self._loading:
            return  # several gets in one tick each scheduled a refresh: one reads
        try:
            await self._load(channel_id)
        except Exception as exc:  # keep serving the entry; the next get retries
            log.warning("refreshing channel %s failed: %s", channel_id, exc)

    async def _load(self, channel_id: str) -> Channel | None:
        future: asyncio.Future[Channel | None] = asyncio.get_running_loop().create_future()
        self._loading[channel_id] = future
        try:
            channel = await self._repo.get(channel_id)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it, nobody else must
            raise
        else:
            self._entries[channel_id] = (time.monotonic(), channel)
            if len(self._entries) > 100_000:
                self._entries.pop(next(iter(self._entries)))
            future.set_result(channel)
            return channel
        finally:
            # Only our own: a fresh read may have started meanwhile.
            if self._loading.get(channel_id) is future:
                del self._loading[channel_id]

    def invalidate(self, channel_id: str) -> None:
        self._entries.pop(channel_id, None)
