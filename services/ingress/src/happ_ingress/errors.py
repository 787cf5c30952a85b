"""Every error the webhook answers (SPEC §3). The service raises these, and the
OpenAPI document's error responses are generated from this list."""

from __future__ import annotations

from happ_common.errors import INVALID_PAYLOAD, SERVICE_UNAVAILABLE, ErrorKind
from happ_ingress.settings import IngressSettings

_DEFAULT_MAX_BODY_BYTES: int = IngressSettings.model_fields["max_body_bytes"].default

CLIENT_DISCONNECTED = ErrorKind(
    400, "CLIENT_DISCONNECTED", "the client went away before the body was read"
)
HMAC_MISMATCH = ErrorKind(
    401, "HMAC_MISMATCH", "`X-HAPP-Signature` does not match the body and the channel's secret"
)
HMAC_REQUIRED = ErrorKind(
    401, "HMAC_REQUIRED", "the channel requires `X-HAPP-Signature` and the request has none"
)
CHANNEL_DISCONNECTED = ErrorKind(403, "CHANNEL_DISCONNECTED", "the channel is disconnected")
CHANNEL_NOT_FOUND = ErrorKind(404, "CHANNEL_NOT_FOUND", "no channel has this id")
MESSAGE_NOT_FOUND = ErrorKind(
    404, "MESSAGE_NOT_FOUND", "`after` names no message of the channel (GET replies)"
)
PAYLOAD_TOO_LARGE = ErrorKind(
    413,
    "PAYLOAD_TOO_LARGE",
    "the body is over the limit (`HAPP_INGRESS_MAX_BODY_BYTES`, "
    f"{_DEFAULT_MAX_BODY_BYTES // 1024} KiB by default)",
)
RATE_LIMITED = ErrorKind(
    429,
    "RATE_LIMITED",
    "over the channel's rate limit; retry after `Retry-After` seconds",
    ("Retry-After",),
)

WEBHOOK_ERRORS = (
    CLIENT_DISCONNECTED,
    HMAC_MISMATCH,
    HMAC_REQUIRED,
    CHANNEL_DISCONNECTED,
    CHANNEL_NOT_FOUND,
    PAYLOAD_TOO_LARGE,
    INVALID_PAYLOAD,
    RATE_LIMITED,
    SERVICE_UNAVAILABLE,
)

# GET /webhook/{id}/replies: signed with the timestamp, over the query string.
REPLIES_ERRORS = (
    HMAC_MISMATCH,
    HMAC_REQUIRED,
    CHANNEL_DISCONNECTED,
    CHANNEL_NOT_FOUND,
    MESSAGE_NOT_FOUND,
    INVALID_PAYLOAD,
    SERVICE_UNAVAILABLE,
)
