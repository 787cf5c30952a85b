"""Identifiers and secrets.

Reply ids are derived from the incoming message, not drawn at random, so a
message the broker redelivers produces the very same reply id: the database's
unique index and the receiver's ``X-HAPP-Delivery-Id`` both see one reply.
"""

from __future__ import annotations

import base64
import re
import secrets
import uuid

CHANNEL_ID_RE = re.compile(r"^cm_[a-z0-9]{12,64}$")
_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
_REPLY_NAMESPACE = uuid.UUID("5b0e4d56-86a4-4c4a-9c1f-2f1d9b1b6a11")
_ACCEPTED_LOG = "acc_"


def new_channel_id() -> str:
    return "cm_" + "".join(secrets.choice(_ALPHABET) for _ in range(16))


def new_message_id() -> str:
    return "msg_" + secrets.token_hex(16)


def new_log_id() -> str:
    return "log_" + secrets.token_hex(16)


def accepted_log_id(channel_id: str, message_id: str) -> str:
    """The request-log id of the webhook that brought a user's message, kept on
    the message (happ_common.messages): it names the message, so the entry is
    found by id through the messages' unique index."""
    encoded = base64.urlsafe_b64encode(message_id.encode()).decode("ascii").rstrip("=")
    return f"{_ACCEPTED_LOG}{channel_id}.{encoded}"


def message_of_accepted_log_id(log_id: str) -> tuple[str, str] | None:
    """``(channel_id, message_id)`` of an ``accepted_log_id``; None for another id."""
    if not log_id.startswith(_ACCEPTED_LOG):
        return None
    channel_id, _, encoded = log_id.removeprefix(_ACCEPTED_LOG).partition(".")
    if not CHANNEL_ID_RE.match(channel_id) or not encoded:
        return None
    try:
        message_id = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    return channel_id, message_id


def reply_id_for(channel_id: str, message_id: str) -> str:
    return "rpl_" + uuid.uuid5(_REPLY_NAMESPACE, f"{channel_id}\n{message_id}").hex


def output_ids_for(channel_id: str, message_id: str) -> tuple[str, str]:
    """The ids of what may go out for a user's message: its reply (or notice),
    and its handoff event. Derived from the message, so a redelivery finds them."""
    return (
        reply_id_for(channel_id, message_id),
        reply_id_for(channel_id, message_id + "\nhandoff"),
    )


def typing_id_for(channel_id: str, message_id: str) -> str:
    """The typing event announcing the answer to ``message_id``: derived like
    the reply's, so a redelivery announces with the same id."""
    return "typ_" + uuid.uuid5(_REPLY_NAMESPACE, f"{channel_id}\n{message_id}\ntyping").hex


def new_channel_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


# A conversation: (channel_id, sender_id).
ConversationKey = tuple[str, str]


def conversation_id(channel_id: str, sender_id: str) -> str:
    """A conversation's id: the ``_id`` of its document in ``conversations``."""
    return f"{channel_id}\n{sender_id}"


def conversation_key(channel_id: str, sender_id: str) -> bytes:
    """The Kafka key of a conversation: one key, one partition, one order."""
    return conversation_id(channel_id, sender_id).encode()


def channel_of_key(key: bytes | None) -> str:
    """The channel of a conversation's Kafka key ("" for a record without one)."""
    return key.split(b"\n", 1)[0].decode(errors="replace") if key else ""
