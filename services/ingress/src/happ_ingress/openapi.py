"""The webhook in the OpenAPI document (``/docs``), though ASGI serves it directly."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from happ_common.errors import ErrorBody
from happ_ingress.schemas import Accepted, Duplicate, WebhookPayload

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
            ],
            "requestBody": {"required": True, "content": json_of(_ref(WebhookPayload, components))},
            "responses": {
                "200": {
                    "description": "Accepted, or a duplicate of a message accepted within 24 h",
                    "content": json_of(
                        {"oneOf": [_ref(Accepted, components), _ref(Duplicate, components)]}
                    ),
                },
                **{
                    status: {"description": text, "content": json_of(_ref(ErrorBody, components))}
                    for status, text in _ERRORS.items()
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
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
