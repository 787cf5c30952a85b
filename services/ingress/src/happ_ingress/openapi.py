"""The ingress OpenAPI document (``/docs``).

The webhook is served by the ASGI layer in ``endpoints.py``, not by a FastAPI
route, so its operation is written into the document here: the request body
from ``WebhookPayload``, the answers from ``Accepted``/``Duplicate`` and its
error responses generated from ``errors.WEBHOOK_ERRORS``, the very kinds the
service raises. The reply HAPP POSTs to the integrator's endpoint is described
in the document's ``webhooks`` section, with the real body model
(``OutgoingBody``) and the signature headers.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Header
from pydantic import BaseModel

from happ_common.errors import ErrorKind, error_responses
from happ_common.ids import CHANNEL_ID_RE
from happ_common.outgoing_body import OutgoingBody
from happ_common.signing import OUTGOING_HEADER_DOCS
from happ_ingress.errors import REPLIES_ERRORS, WEBHOOK_ERRORS
from happ_ingress.schemas import (
    Accepted,
    Duplicate,
    Replied,
    RepliesPage,
    Waited,
    WebhookPayload,
)

SIGNATURE_PATTERN = "^sha256=[0-9a-f]{64}$"
STANDARD_SIGNATURE_PATTERN = "^v1,[A-Za-z0-9+/]{43}=( v1,[A-Za-z0-9+/]{43}=)*$"


def _ref(model: type[BaseModel], components: dict[str, Any]) -> dict[str, str]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(schema.pop("$defs", {}))
    components[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def json_of(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _errors(components: dict[str, Any], kinds: tuple[ErrorKind, ...], name: str) -> dict[str, Any]:
    """An operation's error responses, generated from the kinds the service raises."""
    out: dict[str, Any] = {}
    for status, doc in error_responses(kinds, name).items():
        response = {k: v for k, v in doc.items() if k != "model"}
        response["content"] = json_of(_ref(doc["model"], components))
        out[str(status)] = response
    return out


def _operation(
    components: dict[str, Any], summary: str, operation_id: str, max_body_bytes: int
) -> dict[str, Any]:
    return {
        "post": {
            "tags": ["webhook"],
            "summary": summary,
            "operationId": operation_id,
            "description": "A 200 is sent only after the broker durably acknowledged the message "
            "(acks=all): a 200 means HAPP owns the message. The body is at most "
            f"{max_body_bytes // 1024} KiB and must be sent with `Content-Type: "
            "application/json`.",
            "parameters": [
                {
                    "name": "channel_id",
                    "in": "path",
                    "required": True,
                    # Any other id is a 404 (no such channel).
                    "schema": {"type": "string", "pattern": CHANNEL_ID_RE.pattern},
                },
                {
                    "name": "X-HAPP-Signature",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string", "pattern": SIGNATURE_PATTERN},
                    "description": "`sha256=<hex HMAC-SHA256 of the raw body, keyed with the "
                    "UTF-8 bytes of the channel's secret>`. When present it must verify; a "
                    "channel with `require_signature: true` refuses requests without it.",
                },
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string", "minLength": 1, "maxLength": 128},
                    "description": "The integrator's id of the message, when the body has no "
                    "`message_id`: a repeat within 24 h is answered `duplicate`.",
                },
                {
                    "name": "Prefer",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string", "examples": ["wait=10"]},
                    "description": "wait=<1-30>: on a channel whose delivery is response or "
                    "both, hold the request until the message's reply exists (200 replied) or "
                    "the wait runs out (202). Other values, and the header on an endpoint "
                    "channel, are ignored (RFC 7240).",
                },
            ],
            "requestBody": {"required": True, "content": json_of(_ref(WebhookPayload, components))},
            "responses": {
                "200": {
                    "description": "Accepted, or a duplicate of a message accepted within 24 h; "
                    "with Prefer: wait, the reply (its body exactly as an endpoint receives it)",
                    "headers": _PREFERENCE_APPLIED,
                    "content": json_of(
                        {
                            "oneOf": [
                                _ref(Accepted, components),
                                _ref(Duplicate, components),
                                _ref(Replied, components),
                            ]
                        }
                    ),
                },
                "202": {
                    "description": "Prefer: wait, and no reply within it: the message is "
                    "accepted (HAPP owns it) and its reply follows the channel's normal path",
                    "headers": _PREFERENCE_APPLIED,
                    "content": json_of(_ref(Waited, components)),
                },
                **_errors(components, WEBHOOK_ERRORS, "WebhookError"),
            },
        }
    }


def _header(name: str, **constraints: Any) -> Any:
    return Header(alias=name, description=OUTGOING_HEADER_DOCS[name], **constraints)


# The outgoing reply's headers, as the webhook's parameters (names as sent).
HappSignature = Annotated[str, _header("X-HAPP-Signature", pattern=SIGNATURE_PATTERN)]
DeliveryId = Annotated[str, _header("X-HAPP-Delivery-Id")]
Attempt = Annotated[int, _header("X-HAPP-Attempt", ge=1)]
HappTimestamp = Annotated[int, _header("X-HAPP-Timestamp")]
WebhookId = Annotated[str, _header("webhook-id")]
WebhookTimestamp = Annotated[int, _header("webhook-timestamp")]
WebhookSignature = Annotated[str, _header("webhook-signature", pattern=STANDARD_SIGNATURE_PATTERN)]
UserAgent = Annotated[str, _header("User-Agent")]


def _document_reply(app: FastAPI) -> None:
    """The outgoing reply, as an OpenAPI webhook: what HAPP POSTs to the channel's
    ``outgoing_url``, with the headers ``happ_common.signing.outgoing_headers`` sends."""

    @app.webhooks.post(
        "reply",
        summary="A reply, POSTed to the channel's outgoing URL (HTTPS only)",
        description="Signed with HMAC-SHA256 twice: `X-HAPP-Signature` over the raw body, and "
        "the Standard Webhooks headers, so any Standard Webhooks library verifies it. A 2xx "
        "within 10 s (`HAPP_DELIVERY_TIMEOUT_S`) is success; anything else (a 3xx, which is "
        "not followed, a 4xx, a 5xx, a timeout, a refused connection, a DNS or TLS failure) is "
        "a failed attempt, retried 5, 15 and 60 s after the previous failure (the default "
        "of `HAPP_DELIVERY_RETRY_DELAYS`). Every attempt carries the same `message_id`.",
        operation_id="reply",
        tags=["outgoing"],
        responses={
            200: {"description": "Any 2xx: delivered. The response body is logged, not read."},
            "default": {"description": "Anything else: a failed attempt, retried."},
        },
    )
    def reply(  # noqa: PLR0917 (one parameter per header)
        body: OutgoingBody,
        x_happ_signature: HappSignature,
        x_happ_delivery_id: DeliveryId,
        x_happ_attempt: Attempt,
        x_happ_timestamp: HappTimestamp,
        webhook_id: WebhookId,
        webhook_timestamp: WebhookTimestamp,
        webhook_signature: WebhookSignature,
        user_agent: UserAgent,
    ) -> None:
        """Documentation only: HAPP sends this request, it never receives it."""


_PREFERENCE_APPLIED = {
    "Preference-Applied": {
        "description": "wait=<seconds>, when the request waited for its reply",
        "schema": {"type": "string"},
    }
}


def _replies(components: dict[str, Any]) -> dict[str, Any]:
    return {
        "get": {
            "tags": ["webhook"],
            "summary": "The channel's replies after a message (signed)",
            "operationId": "replies",
            "description": "Oldest first, each the body an endpoint receives; a reply is listed "
            "once it is 2 s old. Signed: X-HAPP-Signature = sha256=<hex HMAC-SHA256, keyed with "
            "the channel secret string, of '<X-HAPP-Timestamp>.<the query string exactly as "
            "sent>'>, the timestamp within 5 minutes of now.",
            "parameters": [
                {
                    "name": "channel_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string"},
                },
                {
                    "name": "after",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "minLength": 1, "maxLength": 128},
                    "description": "the message_id of a message of the channel (yours or a "
                    "reply's): the replies created after it",
                },
                {
                    "name": "limit",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 100},
                },
                {
                    "name": "X-HAPP-Timestamp",
                    "in": "header",
                    "required": True,
                    "schema": {"type": "string", "pattern": "^[0-9]+$"},
                    "description": "unix seconds when the request was signed",
                },
                {
                    "name": "X-HAPP-Signature",
                    "in": "header",
                    "required": True,
                    "schema": {"type": "string", "pattern": "^sha256=[0-9a-fA-F]{64}$"},
                },
            ],
            "responses": {
                "200": {
                    "description": "A page of replies",
                    "content": json_of(_ref(RepliesPage, components)),
                },
                **_errors(components, REPLIES_ERRORS, "RepliesError"),
            },
        }
    }


def document_webhook(app: FastAPI, *, max_body_bytes: int) -> None:
    _document_reply(app)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = FastAPI.openapi(app)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        paths = schema.setdefault("paths", {})
        paths["/webhook/{channel_id}"] = _operation(
            components, "Send a user message", "send_message", max_body_bytes
        )
        paths["/cm/{channel_id}"] = _operation(
            components, "Send a user message (alias)", "send_message_cm", max_body_bytes
        )
        paths["/webhook/{channel_id}/replies"] = _replies(components)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
