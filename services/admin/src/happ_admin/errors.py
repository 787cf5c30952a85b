"""Every error the admin API answers. The services raise these, and the OpenAPI
document's error responses are generated from the groups at the bottom."""

from __future__ import annotations

from typing import Any

from happ_common.errors import INVALID_PAYLOAD, SERVICE_UNAVAILABLE, ErrorKind, error_responses
from happ_common.urls import URL_ERRORS

UNAUTHORIZED = ErrorKind(
    401,
    "UNAUTHORIZED",
    "no valid admin token or session (or, signing in, a wrong token, username or password)",
    ("WWW-Authenticate",),
)
CSRF_TOKEN_INVALID = ErrorKind(
    403,
    "CSRF_TOKEN_INVALID",
    "a state-changing request made with the session cookie has no valid `X-CSRF-Token`",
)
NOT_A_MEMBER = ErrorKind(403, "NOT_A_MEMBER", "an operator, on a channel they are not a member of")
ADMIN_ONLY = ErrorKind(403, "ADMIN_ONLY", "an operator, on a route for admins")

CHANNEL_NOT_FOUND = ErrorKind(
    404, "CHANNEL_NOT_FOUND", "no channel has this id (or one of the ids in `channels`)"
)
USER_NOT_FOUND = ErrorKind(404, "USER_NOT_FOUND", "no user has this id")
LOG_NOT_FOUND = ErrorKind(404, "LOG_NOT_FOUND", "no request-log entry has this id")
CONVERSATION_NOT_FOUND = ErrorKind(
    404, "CONVERSATION_NOT_FOUND", "the channel has no conversation with this sender"
)
MESSAGE_NOT_FOUND = ErrorKind(404, "MESSAGE_NOT_FOUND", "the channel has no message with this id")
DEAD_LETTER_NOT_FOUND = ErrorKind(404, "DEAD_LETTER_NOT_FOUND", "no dead letter has this id")

CHANNEL_DISCONNECTED = ErrorKind(
    409, "CHANNEL_DISCONNECTED", "the channel is disconnected, so nothing would be sent"
)
DELIVERY_IN_PROGRESS = ErrorKind(409, "DELIVERY_IN_PROGRESS", "the reply is still being delivered")
CONVERSATION_HELD = ErrorKind(409, "CONVERSATION_HELD", "another operator holds the conversation")
NOT_HOLDING = ErrorKind(
    409, "NOT_HOLDING", "only the operator holding it may do this: take it over"
)
HANDOFF_DISABLED = ErrorKind(
    409,
    "HANDOFF_DISABLED",
    "the channel's mode is 'assistant': nobody may take its conversations",
)
CONVERSATION_CHANGED = ErrorKind(
    409, "CONVERSATION_CHANGED", "someone acted on the conversation meanwhile: reload it"
)
USERNAME_TAKEN = ErrorKind(409, "USERNAME_TAKEN", "another user has this username")
DELIVERIES_DISABLED = ErrorKind(
    409,
    "DELIVERIES_DISABLED",
    "the channel's deliveries were turned off (its endpoint kept failing): connect it again",
)
REPLIES_NOT_POSTED = ErrorKind(
    409,
    "REPLIES_NOT_POSTED",
    "the channel answers in the webhook's response only (`delivery: response`): "
    "nothing would be sent",
)
RECOVERY_IN_PROGRESS = ErrorKind(
    409, "RECOVERY_IN_PROGRESS", "a recovery of this channel is starting: try again in a moment"
)
RECOVERY_NOT_FOUND = ErrorKind(
    404, "RECOVERY_NOT_FOUND", "the channel has no recovery with this id"
)

_EVERY_ROUTE = (
    UNAUTHORIZED,
    CSRF_TOKEN_INVALID,
    NOT_A_MEMBER,
    ADMIN_ONLY,
    INVALID_PAYLOAD,
    SERVICE_UNAVAILABLE,
)
_NOT_FOUND = (
    CHANNEL_NOT_FOUND,
    USER_NOT_FOUND,
    LOG_NOT_FOUND,
    CONVERSATION_NOT_FOUND,
    MESSAGE_NOT_FOUND,
    DEAD_LETTER_NOT_FOUND,
    RECOVERY_NOT_FOUND,
)

# The error responses every /api route documents (routers' ``responses=``).
ERRORS: dict[int | str, dict[str, Any]] = error_responses(
    (*_EVERY_ROUTE, *_NOT_FOUND, *URL_ERRORS), "Error"
)
# The conflicts of particular routes.
RESEND_CONFLICTS = error_responses(
    (CHANNEL_DISCONNECTED, DELIVERIES_DISABLED, REPLIES_NOT_POSTED, DELIVERY_IN_PROGRESS),
    "ResendError",
)
RECOVERY_CONFLICTS = error_responses(
    (CHANNEL_DISCONNECTED, DELIVERIES_DISABLED, REPLIES_NOT_POSTED, RECOVERY_IN_PROGRESS),
    "RecoveryError",
)
INBOX_CONFLICTS = error_responses(
    (CONVERSATION_HELD, NOT_HOLDING, HANDOFF_DISABLED, CONVERSATION_CHANGED), "InboxError"
)
USER_CONFLICTS = error_responses((USERNAME_TAKEN,), "UserError")
