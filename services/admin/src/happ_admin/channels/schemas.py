"""What the channel routes take and answer (SPEC §5)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema, model_validator

from happ_admin.cursors import Page
from happ_common.channels import (
    RULE_FIELDS,
    AssistantSettings,
    Channel,
    ChannelMode,
    ChannelStatus,
    ConversationRules,
    DeliveriesDisabled,
    DeliveryMode,
    HistoryLength,
    Integral,
    NoticeText,
    Route,
    RuleItem,
    SenderRate,
    WorkingHours,
    stripped,
    trimmed,
)
from happ_common.custom_headers import MASK, MAX_HEADERS, masked
from happ_common.custom_headers import json_schema as headers_schema
from happ_common.urls import MAX_URL_LENGTH, OUTGOING_URL_PATTERN

OUTGOING_HEADERS_DOC = (
    "Headers added to every POST to the endpoint, {name: value}: RFC 7230 names, printable "
    f"ASCII values without line breaks, at most {MAX_HEADERS}; HAPP's own headers "
    "(Content-Type, X-HAPP-*, webhook-*, traceparent, Host, ...) cannot be overridden. "
    "Values are write-only: answers show each as '" + MASK + "'."
)
TYPING_EVENTS_DOC = (
    'Send a best-effort {"event": "typing"} before each answer the assistant writes '
    "(one attempt, never retried, never after the reply)."
)

RateLimit = Annotated[int, Field(ge=1, le=100_000), Integral]
OUTGOING_RATE_DOC = (
    "At most this many requests per second to the outgoing endpoint, all delivery replicas "
    "together (0: no cap). Replies wait their turn; none is dropped."
)
OUTGOING_CONCURRENCY_DOC = (
    "At most this many requests in flight to the outgoing endpoint at once, all delivery "
    "replicas together (0: the service's own per-channel limit, 32 by default). Each replica "
    "holds at least one."
)
OutgoingRate = Annotated[int, Field(ge=0, le=10_000), Integral]
OutgoingConcurrency = Annotated[int, Field(ge=0, le=1_000), Integral]
# A channel's name: not blank, stored stripped.
ChannelName = Annotated[str, trimmed(200), AfterValidator(stripped)]
# An outgoing URL: the JSON schema states its pattern; the service checks it
# (``happ_common.urls.check_https_url``), with the SPEC's error codes.
OutgoingUrl = Annotated[
    str,
    Field(
        max_length=MAX_URL_LENGTH,
        json_schema_extra={"pattern": OUTGOING_URL_PATTERN},
        description="The integrator's HTTPS endpoint for replies.",
    ),
]
# A channel whose delivery is "response" needs no endpoint: "" then. Any other
# channel must have one (422 otherwise: a rule between two fields, stated here).
OutgoingUrlOrBlank = Annotated[
    str,
    Field(
        max_length=MAX_URL_LENGTH,
        json_schema_extra={"pattern": f"^$|{OUTGOING_URL_PATTERN}"},
        description="The integrator's HTTPS endpoint for replies; required (not blank) "
        "unless `delivery` is `response`.",
    ),
]


class ChannelCreate(ConversationRules):
    """A new channel; the SPEC §6a fields (``mode``, filters) come from
    ``ConversationRules``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: ChannelName
    # Required unless delivery is "response" (replies then never leave by POST).
    outgoing_url: OutgoingUrlOrBlank = ""
    delivery: DeliveryMode = "endpoint"
    require_signature: bool = False
    rate_limit_per_second: RateLimit = 100
    assistant: AssistantSettings = Field(default_factory=AssistantSettings)
    outgoing_headers: Annotated[dict[str, str], WithJsonSchema(headers_schema(nullable=False))] = (
        Field(
            default_factory=dict,
            description=OUTGOING_HEADERS_DOC,
            examples=[{"Authorization": "Bearer gw-token"}],
        )
    )
    typing_events: bool = Field(default=False, description=TYPING_EVENTS_DOC)
    outgoing_rate_per_second: OutgoingRate = Field(default=0, description=OUTGOING_RATE_DOC)
    outgoing_max_concurrency: OutgoingConcurrency = Field(
        default=0, description=OUTGOING_CONCURRENCY_DOC
    )

    @model_validator(mode="after")
    def _endpoint_when_posting(self) -> ChannelCreate:
        if self.delivery != "response" and not self.outgoing_url:
            raise ValueError(
                "outgoing_url is required unless delivery is 'response' "
                "(replies returned in the webhook's response only)"
            )
        return self


class AssistantPatch(BaseModel):
    """Only the fields sent change. ``model: null`` means the service's default model."""

    model_config = ConfigDict(extra="forbid", strict=True)

    system_prompt: str | None = Field(default=None, max_length=20_000)
    model: str | None = Field(default=None, max_length=200)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    max_history: HistoryLength | None = None
    fallback_text: str | None = Field(default=None, min_length=1, max_length=4_000)


class ChannelUpdate(BaseModel):
    """Only the fields sent change; ``null`` leaves a field as it is."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: ChannelName | None = None
    outgoing_url: OutgoingUrlOrBlank | None = None
    delivery: DeliveryMode | None = None
    require_signature: bool | None = None
    rate_limit_per_second: RateLimit | None = None
    assistant: AssistantPatch | None = None
    # Merged by name (any case): a value sets or replaces that header, null
    # removes it, names not sent keep their values.
    outgoing_headers: (
        Annotated[dict[str, str | None], WithJsonSchema(headers_schema(nullable=True))] | None
    ) = Field(
        default=None, description=OUTGOING_HEADERS_DOC + " In a PATCH, null removes a header."
    )
    typing_events: bool | None = Field(default=None, description=TYPING_EVENTS_DOC)
    outgoing_rate_per_second: OutgoingRate | None = Field(
        default=None, description=OUTGOING_RATE_DOC
    )
    outgoing_max_concurrency: OutgoingConcurrency | None = Field(
        default=None, description=OUTGOING_CONCURRENCY_DOC
    )
    # SPEC §6a, under the same rules as at creation. Lists are replaced whole.
    # For the three optional settings an explicit null clears them (no working
    # hours, no off-hours text, no rate).
    mode: ChannelMode | None = None
    handoff_keywords: list[RuleItem] | None = Field(default=None, max_length=100)
    handoff_text: NoticeText | None = None
    ignore_senders: list[RuleItem] | None = Field(default=None, max_length=10_000)
    routes: list[Route] | None = Field(default=None, max_length=100)
    working_hours: WorkingHours | None = None
    off_hours_text: NoticeText | None = None
    sender_rate_per_minute: SenderRate | None = None
    rate_notice_text: NoticeText | None = None

    def rules_patch(self) -> dict[str, Any]:
        """The SPEC §6a fields this request changes (validated by the caller)."""
        clearable = {"working_hours", "off_hours_text", "sender_rate_per_minute"}
        return {
            k: getattr(self, k)
            for k in RULE_FIELDS
            if k in self.model_fields_set and (getattr(self, k) is not None or k in clearable)
        }


class ConnectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    outgoing_url: OutgoingUrl | None = None


class ChannelOut(ConversationRules):
    model_config = ConfigDict(extra="ignore")

    id: str
    name: str
    status: ChannelStatus
    webhook_url: str
    # "" for a channel with delivery "response" created without one.
    outgoing_url: str
    delivery: DeliveryMode = "endpoint"
    # Null for operators: only admins see the channel's secret.
    hmac_secret: str | None
    # Until then the secret replaced by the last rotation still verifies.
    previous_secret_expires_at: datetime | None = None
    require_signature: bool
    rate_limit_per_second: int
    assistant: AssistantSettings
    # Names only: every value is shown masked.
    outgoing_headers: dict[str, str] = Field(
        default_factory=dict, examples=[{"Authorization": MASK}]
    )
    typing_events: bool = False
    outgoing_rate_per_second: int = 0
    outgoing_max_concurrency: int = 0
    created_at: datetime
    updated_at: datetime
    # Since when every delivery attempt has failed (null: the endpoint works),
    # and, once that lasted HAPP_DELIVERY_AUTO_DISABLE_AFTER_HOURS, why the
    # channel's deliveries are off; a connect clears both.
    endpoint_failing_since: datetime | None = None
    deliveries_disabled: DeliveriesDisabled | None = None
    # Until then the webhook answers 429: more of the channel's replies wait for
    # the endpoint than their share of a delivery member's memory.
    replies_backlogged_until: datetime | None = None

    @classmethod
    def of(cls, channel: Channel, public_url: str, *, show_secret: bool = True) -> ChannelOut:
        return cls(
            id=channel.id,
            name=channel.name,
            status=channel.status,
            webhook_url=f"{public_url.rstrip('/')}/webhook/{channel.id}",
            outgoing_url=channel.outgoing_url,
            delivery=channel.delivery,
            hmac_secret=channel.hmac_secret if show_secret else None,
            previous_secret_expires_at=(
                channel.previous_secret_expires_at if channel.previous_secrets() else None
            ),
            require_signature=channel.require_signature,
            rate_limit_per_second=channel.rate_limit_per_second,
            assistant=channel.assistant,
            outgoing_headers=masked(channel.outgoing_headers),
            typing_events=channel.typing_events,
            outgoing_rate_per_second=channel.outgoing_rate_per_second,
            outgoing_max_concurrency=channel.outgoing_max_concurrency,
            created_at=channel.created_at,
            updated_at=channel.updated_at,
            endpoint_failing_since=channel.endpoint_failing_since,
            deliveries_disabled=channel.deliveries_disabled,
            replies_backlogged_until=channel.replies_backlogged_until,
            **{k: getattr(channel, k) for k in RULE_FIELDS},
        )


class ChannelList(Page[ChannelOut]):
    pass


# --- send test ----------------------------------------------------------------


class SendTestResult(BaseModel):
    ok: bool
    status_code: int | None
    response_time_ms: float
    error_code: str | None
    error_message: str | None
    # The test request's id (``X-HAPP-Delivery-Id``) and its request-log entry.
    message_id: str
    log_id: str
