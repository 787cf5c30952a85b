"""The MongoDB client, collection names and indexes (PyMongo's async API).

Indexes are created by whichever service starts first; ``create_index`` is
idempotent, so every service may call ``ensure_indexes``.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure

from happ_common.db_latency import DB_LATENCY
from happ_common.db_writes import WriteCounter
from happ_common.settings import HappSettings, InfraSettings

CHANNELS = "channels"
MESSAGES = "messages"
CONVERSATIONS = "conversations"
REQUEST_LOG = "request_log"
# Reply delivery state and the retries pending (happ_common.deliveries): few
# indexes, so their writes stay cheap.
DELIVERIES = "deliveries"
PENDING_RETRIES = "pending_retries"
# People who sign in to the admin UI (admins and operators) and their channel
# memberships; only the admin service reads and writes it (happ_admin.users.repository).
USERS = "users"

Document = dict[str, Any]

# The lower bound of the partial index on kept request-log entries, which every
# query of them repeats so that it may use the index.
KEPT_SINCE = datetime(2000, 1, 1, tzinfo=UTC)

# The server's error code for a unique index (or ``_id``) already taken.
DUPLICATE_KEY = 11000


def connect(infra: InfraSettings) -> AsyncMongoClient[Document]:
    # Short server selection: a readiness probe or a request must fail fast
    # while the database is away, not hang for the default 30 s.
    return AsyncMongoClient(
        infra.mongodb_uri,
        serverSelectionTimeoutMS=3000,
        tz_aware=True,
        connect=False,
        event_listeners=[WriteCounter(), DB_LATENCY],
    )


def database(client: AsyncMongoClient[Document], infra: InfraSettings) -> AsyncDatabase[Document]:
    return client[infra.mongodb_db]


async def ping(db: AsyncDatabase[Document]) -> None:
    await db.command("ping")


async def ensure_indexes(db: AsyncDatabase[Document], happ: HappSettings) -> None:
    messages = db[MESSAGES]
    await messages.create_index(
        [("channel_id", ASCENDING), ("message_id", ASCENDING)], unique=True, name="message_id"
    )
    await messages.create_index(
        [("channel_id", ASCENDING), ("sender_id", ASCENDING), ("created_at", ASCENDING)],
        name="conversation",
    )
    # The accepted webhook's log entry is kept on the user's message it brought
    # (happ_common.messages): the admin lists a channel's log from it too, and
    # the ingress's retention sweep finds the old ones by it. Partial, so that
    # replies, operators' messages and messages sent without an id cost it
    # nothing: on a range of ``request.created_at``, which every query of it
    # bounds from below (``KEPT_SINCE``), since neither MongoDB nor the
    # embedded database infers ``$exists`` from a condition on a subfield.
    await messages.create_index(
        [
            ("channel_id", ASCENDING),
            ("request.created_at", DESCENDING),
            ("request.id", DESCENDING),
        ],
        name="channel_accepted_requests",
        partialFilterExpression={"request.created_at": {"$gte": KEPT_SINCE}},
    )
    # Delivery state moved to its own collections (happ_common.deliveries); a
    # database from before that still has this index on messages, where every
    # reply insert would keep paying for it.
    if "retrying" in await messages.index_information():
        with contextlib.suppress(OperationFailure):  # another service dropped it first
            await messages.drop_index("retrying")
    await db[CONVERSATIONS].create_index(
        [("channel_id", ASCENDING), ("last_message_at", DESCENDING)], name="recent"
    )
    # The admin's live updates read what changed since their last look; the inbox
    # reads the conversations waiting for or held by a person.
    await db[CONVERSATIONS].create_index("inbox_at", name="changed_for_people", sparse=True)
    await db[CONVERSATIONS].create_index(
        [("state", ASCENDING), ("updated_at", DESCENDING)], name="inbox"
    )
    log = db[REQUEST_LOG]
    await log.create_index(
        [("channel_id", ASCENDING), ("created_at", DESCENDING), ("_id", DESCENDING)],
        name="channel_recent",
    )
    await log.create_index(
        "created_at",
        expireAfterSeconds=happ.request_log_retention_days * 86400,
        name="retention",
    )
    # A first attempt's request-log entry is kept in its delivery state
    # (happ_common.deliveries): the admin lists a channel's log from both.
    await db[DELIVERIES].create_index(
        [
            ("channel_id", ASCENDING),
            ("first_attempt.created_at", DESCENDING),
            ("first_attempt.id", DESCENDING),
        ],
        name="channel_first_attempts",
    )
    # One user per username; and a channel's members (GET /api/channels/{id}/members).
    await db[USERS].create_index("username", unique=True, name="username")
    await db[USERS].create_index("channels", name="member_of")
