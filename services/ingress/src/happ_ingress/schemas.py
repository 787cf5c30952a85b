"""The webhook's request and response bodies (SPEC §3)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import to_json

from happ_common.errors import ErrorDetail
from happ_common.events import AttachmentType
from happ_common.outgoing_body import OutgoingBody
from happ_common.urls import HTTP_URL_PATTERN

MAX_METADATA_BYTES = 16 * 1024

# The integrator's id for a message, from the body or the Idempotency-Key header.
MessageId = Annotated[str, Field(min_length=1, max_length=128)]
_HEADER_KEY: TypeAdapter[str] = TypeAdapter(MessageId)


_HTTP_URL = re.compile(HTTP_URL_PATTERN)


class AttachmentIn(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    type: AttachmentType
    url: str = Field(
        max_length=2048,
        json_schema_extra={"pattern": HTTP_URL_PATTERN},
        description="An absolute http:// or https:// URL.",
    )
    name: str | None = Field(default=None, max_length=1024)
    mime_type: str | None = Field(default=None, max_length=255)

    @field_validator("url")
    @classmethod
    def _absolute_http_url(cls, url: str) -> str:
        if _HTTP_URL.fullmatch(url) is None:
            raise ValueError("must be an absolute http(s) URL")
        return url


_INT64 = range(-(2**63), 2**63)


def storable(value: object) -> bool:
    """What MongoDB can store: no object key, at any depth, contains NUL (BSON
    keys are C strings), and every integer fits in 64 bits."""
    if isinstance(value, dict):
        return all("\x00" not in k and storable(v) for k, v in value.items())
    if isinstance(value, list):
        return all(storable(v) for v in value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value in _INT64
    return True


def metadata_problem(metadata: dict[str, Any]) -> str | None:
    """Why ``metadata`` is refused, if it is: over 16 KiB as JSON, or valid JSON no
    MongoDB can store (refused here rather than accepted and never answered)."""
    size = len(to_json(metadata))
    if size > MAX_METADATA_BYTES:
        return f"must be at most 16 KiB as JSON (is {size} bytes)"
    if not storable(metadata):
        return (
            "object keys must not contain the NUL character (\\u0000) and integers "
            "must fit in 64 bits"
        )
    return None


def _payload_schema(schema: dict[str, Any]) -> None:
    """What the validators below add to the generated JSON schema: ``attachments``
    may be null (read as none), and ``text`` may be empty only next to attachments."""
    props = schema["properties"]
    props["metadata"]["description"] = (
        "Any JSON object, returned unchanged in the reply: at most 16 KiB as JSON, no NUL "
        "character (\\u0000) in any key at any depth, integers within 64 bits."
    )
    props["attachments"] = {
        "anyOf": [props["attachments"], {"type": "null"}],
        "title": "Attachments",
        "description": "At most 10; null or absent means none.",
    }
    schema["anyOf"] = [
        {"properties": {"text": {"minLength": 1}}},
        {
            "properties": {"attachments": {"type": "array", "minItems": 1}},
            "required": ["attachments"],
        },
    ]


class WebhookPayload(BaseModel):
    """An incoming message. Unknown fields are ignored; types are not coerced."""

    model_config = ConfigDict(extra="ignore", strict=True, json_schema_extra=_payload_schema)

    sender_id: str = Field(min_length=1, max_length=256)
    text: str = Field(max_length=10_000)
    sender_name: str | None = Field(default=None, max_length=256)
    metadata: dict[str, Any] | None = None
    attachments: list[AttachmentIn] = Field(default_factory=list, max_length=10)
    message_id: MessageId | None = None

    @field_validator("attachments", mode="before")
    @classmethod
    def _null_is_none(cls, value: object) -> object:
        # Integrators serialise "no attachments" as null as often as they omit it.
        return [] if value is None else value

    @field_validator("metadata")
    @classmethod
    def _metadata_size(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        problem = None if value is None else metadata_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _text_or_attachments(self) -> WebhookPayload:
        if self.text == "" and not self.attachments:
            raise ValueError("text may be empty only when attachments are sent")
        return self


def idempotency_key_problems(key: str | None) -> list[ErrorDetail]:
    """The header names the same id as ``message_id``, under the same rules: a longer
    key cut to size would make two keys sharing a prefix one message."""
    if key is None:
        return []
    try:
        _HEADER_KEY.validate_python(key)
    except ValidationError as exc:
        return [ErrorDetail(field="Idempotency-Key", problem=e["msg"]) for e in exc.errors()]
    return []


class Accepted(BaseModel):
    status: Literal["accepted"] = "accepted"
    message_id: str
    channel_id: str


class Duplicate(BaseModel):
    status: Literal["duplicate"] = "duplicate"
    message_id: str


class Waited(BaseModel):
    """202 to ``Prefer: wait``: accepted (a 200 would have said so too), but no
    reply within the wait; it follows the channel's normal path."""

    status: Literal["accepted", "duplicate"]
    message_id: str


class Replied(BaseModel):
    """200 to ``Prefer: wait``: the reply, exactly the body POSTed to an endpoint.
    Documentation only: the response is assembled from the rendered bytes
    (``service.ReplyInResponse``), so ``reply`` is byte for byte that body."""

    status: Literal["replied"] = "replied"
    message_id: str
    reply: OutgoingBody


class RepliesPage(BaseModel):
    """``GET /webhook/{channel_id}/replies``: documentation of its body."""

    items: list[OutgoingBody]
    next_after: str | None = Field(
        description="the last item's message_id: pass it as after= for the next page; "
        "null when this page is empty"
    )
