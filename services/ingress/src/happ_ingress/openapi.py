"""The webhook in the OpenAPI document (``/docs``), though ASGI serves it directly."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from happ_common.errors import ErrorBody
from happ_ingress.schemas import (
    Accepted,
    Duplicate,
    Replied,
    RepliesPage,
    Waited,
    WebhookPayload,
)

_ERRORS = {
    "401": "Signature wrong (HMAC_MISMATCH) or missing while required (HMAC_REQUIRED)",
    "403": "The channel is disconnected (CHANNEL_DISCONNECTED)",
    "404": "No such channel (CHANNEL_NOT_FOUND)",
    "413": "Body over 256 KiB (PAYLOAD_TOO_LARGE)",
    "422": "Not JSON, not an object, wrong Content-Type or invalid fields (INVALID_PAYLOAD)",
    "429": "Over the channel's rate limit (RATE_LIMITED); see Retry-After",
    "503": "Not durably enqueued (SERVICE_UNAVAILABLE); retry after Retry-After",
}


def _ref(model: type[BaseModel], components: dict[str, Any]) -> dict[str, str]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(schema.pop("$defs", {}))
    components[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def json_of(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _operation(components: dict[str, Any], summary: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "description": "A 200 is sent only after the broker durably acknowledged the message "
            "(acks=all): a 200 means HAPP owns the message.",
            "parameters": [
                {
                    "name": "channel_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string"},
                },
                {
                    "name": "X-HAPP-Signature",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string"},
                    "description": "sha256=<hex HMAC-SHA256 of the raw body>",
                },
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string", "minLength": 1, "maxLength": 128},
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
                **{
                    status: {"description": text, "content": json_of(_ref(ErrorBody, components))}
                    for status, text in _ERRORS.items()
                },
            },
        }
    }


_PREFERENCE_APPLIED = {
    "Preference-Applied": {
        "description": "wait=<seconds>, when the request waited for its reply",
        "schema": {"type": "string"},
    }
}

_REPLIES_ERRORS = {
    "401": "A signature header missing (HMAC_REQUIRED), or the signature wrong or "
    "X-HAPP-Timestamp more than 5 minutes from now (HMAC_MISMATCH)",
    "403": "The channel is disconnected (CHANNEL_DISCONNECTED)",
    "404": "No such channel (CHANNEL_NOT_FOUND), or after names no message of it "
    "(MESSAGE_NOT_FOUND)",
    "422": "An unknown or repeated query parameter, or one out of range (INVALID_PAYLOAD)",
    "503": "The database is unavailable (SERVICE_UNAVAILABLE); retry",
}


def _replies(components: dict[str, Any]) -> dict[str, Any]:
    return {
        "get": {
            "summary": "The channel's replies after a message (signed)",
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
                **{
                    status: {"description": text, "content": json_of(_ref(ErrorBody, components))}
                    for status, text in _REPLIES_ERRORS.items()
                },
            },
        }
    }


def document_webhook(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = FastAPI.openapi(app)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        paths = schema.setdefault("paths", {})
        paths["/webhook/{channel_id}"] = _operation(components, "Send a user message")
        paths["/cm/{channel_id}"] = _operation(components, "Send a user message (alias)")
        paths["/webhook/{channel_id}/replies"] = _replies(components)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
