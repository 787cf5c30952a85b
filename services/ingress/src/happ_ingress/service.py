"""What the webhook does with a request, from raw bytes to the broker's ack.

Order of checks: channel (404, 403), signature (401), rate limit and the
channel's reply backlog (429), body (422), a repeat accepted here (duplicate),
publish (503 unless acknowledged), then the idempotency record (accepted or
duplicate). Every request to an existing channel, accepted or not, leaves one
request-log entry; an accepted message's entry is its idempotency record
(repository.py), so its webhook writes one document.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import parse_qs

from prometheus_client import Counter, Histogram
from pydantic import ValidationError

from happ_common.channels import Channel, ChannelCache
from happ_common.errors import (
    ErrorDetail,
    HappError,
    details_from_validation,
    invalid_payload,
    service_unavailable,
)
from happ_common.events import Attachment, InboundMessage
from happ_common.ids import CHANNEL_ID_RE, conversation_key, new_log_id, new_message_id
from happ_common.kafka import Publisher, PublishFailed
from happ_common.log_context import message_context
from happ_common.messages import user_message_document
from happ_common.mongo import Document
from happ_common.outgoing_body import render
from happ_common.request_log import MAX_REQUEST_BODY, LogEntry, RequestLogWriter, cut, document
from happ_common.signing import verify_happ_signature
from happ_common.topics import INBOUND_MESSAGES
from happ_ingress.errors import (
    CHANNEL_DISCONNECTED,
    CHANNEL_NOT_FOUND,
    HMAC_MISMATCH,
    HMAC_REQUIRED,
    MESSAGE_NOT_FOUND,
    RATE_LIMITED,
)
from happ_ingress.rate_limit import TokenBuckets
from happ_ingress.replies import ReplyStore, ReplyWaiters, settled
from happ_ingress.repository import AcceptedRecords
from happ_ingress.schemas import (
    Accepted,
    Duplicate,
    Waited,
    WebhookPayload,
    idempotency_key_problems,
)
from happ_ingress.settings import IngressSettings

log = logging.getLogger(__name__)

REQUESTS = Counter("happ_ingress_requests_total", "Webhook requests by outcome", ["outcome"])
LATENCY = Histogram(
    "happ_ingress_request_seconds",
    "Webhook request handling time, broker ack included",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
REPLIES_REQUESTS = Counter(
    "happ_ingress_replies_requests_total",
    "GET /webhook/{channel_id}/replies requests by outcome",
    ["outcome"],
)
BACKLOG_REFUSALS = Counter(
    "happ_ingress_backlog_refusals_total",
    "Webhook requests refused 429 because the channel's replies wait for its endpoint "
    "(counted in happ_ingress_requests_total as RATE_LIMITED too)",
)
RECORDS_LOST = Counter(
    "happ_ingress_idempotency_claims_unmarked_total",
    "Accepted messages whose idempotency record could not be written in time (a repeat "
    "reaching another replica is published again)",
)
LOG_UNCOMPLETED = Counter(
    "happ_ingress_wait_outcomes_unlogged_total",
    "Accepted webhooks that waited for their reply whose request-log entry kept the "
    "answer given at the broker's ack (its record was not written in time)",
)
_FIX_DETAILS = "The message is invalid: fix the fields listed in details."
# Bounds the memory of the keys this replica accepted (each a few hundred bytes).
_ACCEPTED_KEPT = 10_000
_FIRST_RECORD_PAUSE_S = 0.1
# Records being retried in the background at once, and their estimated bytes:
# each holds its entry (up to a 16 KiB body) and the message it stores (the same
# text, metadata and attachments, parsed). Beyond either bound a record is tried
# once, then its entry goes to the request log's byte-bounded buffer.
_BACKGROUND_RECORDS_MAX = 2_000
_BACKGROUND_RECORDS_BYTES = 64 * 1024 * 1024
# A record's bytes besides its body, and the weight of the request's body, held
# twice: in the entry (cut at 16 KiB) and parsed in the message (text, metadata,
# attachments: a few times their JSON).
_RECORD_OVERHEAD = 3_000
_RECORD_BODY_WEIGHT = 5


@dataclass(frozen=True)
class IncomingRequest:
    channel_id: str
    path: str
    body: bytes
    content_type: str | None
    signature: str | None
    idempotency_key: str | None


@dataclass(frozen=True)
class Wait:
    """``Prefer: wait=<seconds>``, and how to tell that the client went away."""

    seconds: int
    disconnected: Callable[[], Awaitable[object]]


@dataclass(frozen=True)
class ReplyInResponse:
    """The 200 answering a wait with the reply: the outgoing body's exact bytes."""

    message_id: str
    reply: bytes
    status: str = "replied"

    def json(self) -> bytes:
        head = json.dumps({"status": "replied", "message_id": self.message_id})[:-1]
        return head.encode() + b', "reply": ' + self.reply + b"}"


Result = Accepted | Duplicate | ReplyInResponse | Waited

# GET replies: how far the signed timestamp may be from now, either way.
REPLIES_TOLERANCE_S = 300
REPLIES_PAGE = 100


@dataclass(frozen=True)
class RepliesRequest:
    channel_id: str
    path: str
    query: str  # exactly as sent, after the "?": it is what the signature covers
    timestamp: str | None
    signature: str | None


class IngressService:
    def __init__(
        self,
        settings: IngressSettings,
        channels: ChannelCache,
        idempotency: AcceptedRecords,
        publisher: Publisher,
        request_log: RequestLogWriter,
        *,
        waiters: ReplyWaiters | None = None,
        replies: ReplyStore | None = None,
    ) -> None:
        self._settings = settings
        self._waiters = waiters
        self._replies = replies
        self._channels = channels
        self._idempotency = idempotency
        self._publisher = publisher
        self._log = request_log
        self._buckets = TokenBuckets()
        # How long a record that failed is retried in the background.
        self._record_for_s = settings.publish_timeout_s * 2
        # Accepted here recently: a repeat reaching this replica is a duplicate
        # without a publish or a database round trip, whatever its record says.
        self._accepted_here: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._accepting: dict[tuple[str, str], asyncio.Event] = {}
        self.completing_records: set[asyncio.Task[None]] = set()
        self._background_bytes = 0
        # Records still being written in the background, by (channel, key): a wait's
        # outcome is added to its record once it is there.
        self._recording: dict[tuple[str, str], asyncio.Task[None]] = {}
        # The owner token of the records accepted here, for a wait's outcome
        # to be added to this request's record only; bounded as _accepted_here.
        self._owners: OrderedDict[tuple[str, str], str] = OrderedDict()

    async def receive(self, req: IncomingRequest, wait: Wait | None = None) -> Result:
        """The answer to a webhook request. With ``wait`` (honoured on channels
        whose replies may leave in the response), the accepted message's reply
        is awaited for up to its seconds: ``ReplyInResponse``, else ``Waited``."""
        started = time.perf_counter()
        # The wait is not the request's handling time: the latency histogram (and
        # its p99 alert) measure up to the broker's ack, with or without a wait.
        handled: float | None = None
        outcome = "accepted"
        response_body: str | None = None
        try:
            channel = await self._channel(req.channel_id)
            accepted, sender_id, recorded = await self._receive(channel, req, started)
            handled = time.perf_counter()
            # Counted by what happened to the message; WAITS counts the waits.
            outcome = accepted.status
            result: Result = accepted
            if wait is not None and self._waiters is not None and channel.answers_in_response:
                result = await self._wait_for_reply(channel, accepted, sender_id, wait)
                # The request log shows how the reply left: in this response.
                response_body = cut(
                    result.json()
                    if isinstance(result, ReplyInResponse)
                    else result.model_dump_json(),
                    MAX_REQUEST_BODY,
                )
        except HappError as exc:
            outcome = exc.code
            if exc.code != CHANNEL_NOT_FOUND.code:  # no channel to file it under
                self._log.add(self._entry(req, started, exc.status_code, exc.code, None))
            raise
        except Exception:
            # MongoDB away during the channel read: the
            # caller gets a 503 (endpoints.py) and retries; counted, not logged,
            # since the log lives in that same database.
            outcome = "SERVICE_UNAVAILABLE"
            raise
        else:
            status = 202 if isinstance(result, Waited) else 200
            if not recorded:
                self._log.add(
                    self._entry(
                        req, started, status, None, result.message_id, response_body=response_body
                    )
                )
            elif status != 200 or response_body is not None:
                # How the wait ended, added to the entry the record already is.
                self._complete_record(
                    req.channel_id,
                    result.message_id,
                    {
                        "status_code": status,
                        "response_body": response_body,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    },
                )
            if outcome == "duplicate":
                with message_context(channel_id=req.channel_id, message_id=result.message_id):
                    log.info("duplicate of an accepted message: not enqueued again")
            return result
        finally:
            REQUESTS.labels(outcome=outcome).inc()
            LATENCY.observe((handled or time.perf_counter()) - started)

    async def replies(self, req: RepliesRequest) -> bytes:
        """``GET /webhook/{id}/replies?after=<message_id>&limit=<n>``, signed: the
        channel's replies after a message, each the body an endpoint would get."""
        started = time.perf_counter()
        logged = IncomingRequest(req.channel_id, req.path + "?" + req.query, b"", None, None, None)
        try:
            channel = await self._channel(req.channel_id)
        except HappError as exc:
            REPLIES_REQUESTS.labels(outcome=exc.code).inc()
            raise
        try:
            self._check_replies_signature(channel, req)
            after, limit = _replies_query(req.query)
            if self._replies is None:
                raise service_unavailable("Replies cannot be read right now; retry shortly.", 1)
            found = await self._replies.replies_after(channel.id, after, limit, settled())
            if found is None:
                raise MESSAGE_NOT_FOUND(
                    f"No message {after!r} in this channel: pass the message_id of a message you "
                    "sent or of a reply you received.",
                )
        except HappError as exc:
            REPLIES_REQUESTS.labels(outcome=exc.code).inc()
            self._log.add(
                self._entry(logged, started, exc.status_code, exc.code, None, method="GET")
            )
            raise
        now = int(time.time())
        items = b",".join(render(r, now) for r in found)
        next_after = found[-1].reply_id if found else after
        body = (
            b'{"items": [' + items + b'], "next_after": ' + json.dumps(next_after).encode() + b"}"
        )
        REPLIES_REQUESTS.labels(outcome="ok").inc()
        self._log.add(
            self._entry(
                logged,
                started,
                200,
                None,
                next_after,
                response_body=cut(body, MAX_REQUEST_BODY),
                method="GET",
            )
        )
        return body

    @staticmethod
    def _check_replies_signature(channel: Channel, req: RepliesRequest) -> None:
        if req.signature is None or req.timestamp is None:
            raise HMAC_REQUIRED(
                "Sign the request: X-HAPP-Timestamp: <unix seconds> and X-HAPP-Signature: "
                "sha256=<hex HMAC-SHA256 of '<timestamp>.<query string>' keyed with the channel "
                "secret>.",
            )
        signed = f"{req.timestamp}.{req.query}".encode()
        if not verify_happ_signature(channel.verifying_secrets(), signed, req.signature):
            raise HMAC_MISMATCH(
                "X-HAPP-Signature does not match: HMAC-SHA256 over '<X-HAPP-Timestamp>.<the "
                "query string exactly as sent>' with the channel's current secret.",
            )
        # Checked after the signature, so the timestamp is the integrator's own.
        if not req.timestamp.isdigit() or abs(time.time() - int(req.timestamp)) > (
            REPLIES_TOLERANCE_S
        ):
            raise HMAC_MISMATCH(
                f"X-HAPP-Timestamp is more than {REPLIES_TOLERANCE_S} s from now: sign each "
                "request as you send it (and check your clock).",
            )

    async def record_rejection(self, channel_id: str, path: str, exc: HappError) -> None:
        """Log a request refused before its body was read (too large)."""
        REQUESTS.labels(outcome=exc.code).inc()
        if CHANNEL_ID_RE.match(channel_id) and await self._channels.get(channel_id):
            req = IncomingRequest(channel_id, path, b"", None, None, None)
            self._log.add(self._entry(req, time.perf_counter(), exc.status_code, exc.code, None))

    async def _channel(self, channel_id: str) -> Channel:
        channel = await self._channels.get(channel_id) if CHANNEL_ID_RE.match(channel_id) else None
        if channel is None:
            raise CHANNEL_NOT_FOUND(
                f"No channel {channel_id!r} exists; check the webhook URL.",
            )
        if channel.status != "connected":
            raise CHANNEL_DISCONNECTED(
                "This channel is disconnected; reconnect it in HAPP to accept messages again.",
            )
        return channel

    async def _wait_for_reply(
        self, channel: Channel, accepted: Accepted | Duplicate, sender_id: str, wait: Wait
    ) -> ReplyInResponse | Waited:
        assert self._waiters is not None
        reply = await self._waiters.wait(
            channel.id,
            accepted.message_id,
            conversation_key(channel.id, sender_id),
            wait.seconds,
            wait.disconnected,
        )
        if reply is None:
            return Waited(status=accepted.status, message_id=accepted.message_id)
        with message_context(
            channel_id=channel.id, conversation_id=sender_id, message_id=accepted.message_id
        ):
            log.info("reply %s returned in the webhook's response", reply.reply_id)
        # Rendered as the delivery service renders it, signed at this moment.
        return ReplyInResponse(accepted.message_id, render(reply, int(time.time())))

    async def _receive(
        self, channel: Channel, req: IncomingRequest, started: float
    ) -> tuple[Accepted | Duplicate, str, bool]:
        """The answer, the sender (whose conversation a wait watches), and whether
        the request's log entry is written already (as the accepted record)."""
        self._check_signature(channel, req)
        wait = self._buckets.take(
            channel.id, channel.rate_limit_per_second / self._settings.replicas
        )
        if wait > 0:
            raise RATE_LIMITED(
                f"Over this channel's limit of {channel.rate_limit_per_second} messages per "
                "second; queue on your side and retry after Retry-After seconds.",
                headers={"Retry-After": TokenBuckets.retry_after_header(wait)},
            )
        self._check_backlog(channel)
        payload = self._parse(req)
        key = payload.message_id or req.idempotency_key
        message_id = key or new_message_id()
        if key is None:
            await self._publish(channel, payload, message_id)
            return Accepted(message_id=message_id, channel_id=channel.id), payload.sender_id, False
        answer = await self._receive_once(channel, payload, key, req, started)
        return answer, payload.sender_id, isinstance(answer, Accepted)

    @staticmethod
    def _check_backlog(channel: Channel) -> None:
        """429 while a delivery member holds more of the channel's replies than
        its share (happ_delivery.backlog): the endpoint takes them slower than
        they are sent, and only this channel's sender is asked to wait."""
        until = channel.replies_backlogged_until
        if until is None:
            return
        left = (until - datetime.now(UTC)).total_seconds()
        if left > 0:
            BACKLOG_REFUSALS.inc()
            raise RATE_LIMITED(
                "This channel's replies are waiting for its endpoint (its outgoing pace, a "
                "Retry-After or failures) faster than it takes them; retry after "
                "Retry-After seconds.",
                headers={"Retry-After": TokenBuckets.retry_after_header(left)},
            )

    async def _receive_once(
        self,
        channel: Channel,
        payload: WebhookPayload,
        key: str,
        req: IncomingRequest,
        started: float,
    ) -> Accepted | Duplicate:
        ident = (channel.id, key)
        # A repeat racing a copy in this replica waits for it rather than publish too.
        while (earlier := self._accepting.get(ident)) is not None:
            await earlier.wait()
        if ident in self._accepted_here:
            return Duplicate(message_id=key)
        done = self._accepting[ident] = asyncio.Event()
        try:
            # One token for every attempt at this request's record: an insert that
            # landed but whose answer was lost is recognised as ours on a retry,
            # and so is the message should the assistant store it first.
            owner = secrets.token_hex(8)
            event = await self._publish(channel, payload, key, accepted_by=owner)
            # The broker acknowledged: HAPP owns the message. Its record decides
            # between repeats racing on other replicas which one answers
            # "accepted" (repository.py).
            entry = self._entry(req, started, 200, None, key)
            first = await self._record_accepted(
                channel.id,
                key,
                entry,
                owner,
                user_message_document(event),
                body_bytes=len(req.body),
            )
            self._accepted_here[ident] = None
            while len(self._accepted_here) > _ACCEPTED_KEPT:
                self._accepted_here.popitem(last=False)
            while len(self._owners) > _ACCEPTED_KEPT:
                self._owners.popitem(last=False)
        finally:
            del self._accepting[ident]
            done.set()
        if first:
            return Accepted(message_id=key, channel_id=channel.id)
        return Duplicate(message_id=key)

    async def _record_accepted(
        self,
        channel_id: str,
        key: str,
        entry: LogEntry,
        owner: str,
        message: Document,
        *,
        body_bytes: int,
    ) -> bool:
        """Whether this copy's record was the first. The webhook waits for it only
        so long (``HAPP_INGRESS_IDEMPOTENCY_WAIT_S``): the message is on the
        broker whatever happens to its record, so past that, or should the
        database fail, the answer is ``accepted`` and the record is completed in
        the background."""
        self._owners[(channel_id, key)] = owner
        attempt = asyncio.ensure_future(self._idempotency.record(message, document(entry)))
        try:
            return await asyncio.wait_for(
                asyncio.shield(attempt), self._settings.idempotency_wait_s
            )
        except BaseException as exc:
            # Timed out, failed, or this request was cancelled (a forced
            # shutdown): the message is on the broker, so its record is completed
            # in the background either way.
            # Past the bounds, the record is not retried: each task holds its entry
            # and its message.
            size = _RECORD_OVERHEAD + _RECORD_BODY_WEIGHT * body_bytes
            retry = (
                len(self.completing_records) < _BACKGROUND_RECORDS_MAX
                and self._background_bytes + size <= _BACKGROUND_RECORDS_BYTES
            )
            self._background_bytes += size
            task = asyncio.create_task(
                self._record_accepted_later(channel_id, key, entry, message, attempt, retry=retry)
            )
            self.completing_records.add(task)
            self._recording[(channel_id, key)] = task

            def done(task: asyncio.Task[None]) -> None:
                self._background_bytes -= size
                self.completing_records.discard(task)
                if self._recording.get((channel_id, key)) is task:
                    del self._recording[(channel_id, key)]

            task.add_done_callback(done)
            if not isinstance(exc, Exception):
                raise
            if not isinstance(exc, TimeoutError):
                log.warning("record of %s/%s failed, retrying: %s", channel_id, key, exc)
            return True

    async def _record_accepted_later(
        self,
        channel_id: str,
        key: str,
        entry: LogEntry,
        message: Document,
        attempt: asyncio.Future[bool],
        *,
        retry: bool,
    ) -> None:
        """Retries a record for a bounded time; a repeat reaching this replica
        meanwhile is answered from ``_accepted_here`` anyway, and one reaching
        another replica is published again, which the assistant recognises.
        Should the record not be this request's in the end (another replica's
        copy was first, or it was given up), the request's entry is written to
        the request log as any other request's."""
        give_up = time.monotonic() + (self._record_for_s if retry else 0.0)
        pause = _FIRST_RECORD_PAUSE_S
        doc = document(entry)
        while True:
            try:
                ours = await attempt
            except Exception as exc:
                if time.monotonic() + pause >= give_up:
                    RECORDS_LOST.inc()
                    log.error(
                        "message %s/%s accepted but never recorded: a repeat reaching another "
                        "replica will be published again: %s",
                        channel_id,
                        key,
                        exc,
                    )
                    self._log.add(entry)
                    return
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)
                attempt = asyncio.ensure_future(self._idempotency.record(message, doc))
            else:
                if not ours:
                    self._log.add(entry)
                return

    def _complete_record(self, channel_id: str, key: str, fields: Document) -> None:
        task = asyncio.create_task(self._completed(channel_id, key, fields))
        self.completing_records.add(task)
        task.add_done_callback(self.completing_records.discard)

    async def _completed(self, channel_id: str, key: str, fields: Document) -> None:
        pending = self._recording.get((channel_id, key))
        if pending is not None:
            await asyncio.wait([pending])
        owner = self._owners.get((channel_id, key))
        try:
            found = owner is not None and await self._idempotency.complete(
                channel_id, key, owner, fields
            )
        except Exception as exc:
            found = False
            log.warning("request log: how %s/%s ended was not added: %s", channel_id, key, exc)
        if not found:
            LOG_UNCOMPLETED.inc()

    async def stop(self) -> None:
        """Lets the records still being written finish (each within its bound)."""
        await asyncio.gather(*self.completing_records, return_exceptions=True)
        await self._idempotency.drain()

    def _check_signature(self, channel: Channel, req: IncomingRequest) -> None:
        if req.signature is None:
            if channel.require_signature:
                raise HMAC_REQUIRED(
                    "This channel requires X-HAPP-Signature: sha256=<hex HMAC-SHA256 of the "
                    "raw body keyed with the channel secret>.",
                )
            return
        if not verify_happ_signature(channel.verifying_secrets(), req.body, req.signature):
            raise HMAC_MISMATCH(
                "X-HAPP-Signature does not match: compute HMAC-SHA256 over the raw request body "
                "(not the URL) with the channel's current secret.",
            )

    @staticmethod
    def _parse(req: IncomingRequest) -> WebhookPayload:
        media_type = (req.content_type or "").split(";", 1)[0].strip().lower()
        if media_type != "application/json":
            raise invalid_payload("Send the body as JSON with Content-Type: application/json.")
        problems = idempotency_key_problems(req.idempotency_key)
        try:
            payload = WebhookPayload.model_validate_json(req.body)
        except ValidationError as exc:
            if any(e["type"] == "json_invalid" for e in exc.errors()):
                raise invalid_payload("The body is not valid JSON.") from exc
            if any(e["type"] == "model_type" and not e["loc"] for e in exc.errors()):
                raise invalid_payload("The body must be a JSON object.") from exc
            raise invalid_payload(_FIX_DETAILS, details_from_validation(exc) + problems) from exc
        if problems:
            raise invalid_payload(_FIX_DETAILS, problems)
        return payload

    async def _publish(
        self,
        channel: Channel,
        payload: WebhookPayload,
        message_id: str,
        *,
        accepted_by: str | None = None,
    ) -> InboundMessage:
        event = InboundMessage(
            channel_id=channel.id,
            message_id=message_id,
            sender_id=payload.sender_id,
            sender_name=payload.sender_name,
            text=payload.text,
            metadata=payload.metadata,
            attachments=[Attachment.model_validate(a.model_dump()) for a in payload.attachments],
            received_at=datetime.now(UTC),
            accepted_by=accepted_by,
        )
        with message_context(
            channel_id=channel.id, conversation_id=payload.sender_id, message_id=message_id
        ):
            try:
                await self._publisher.publish(
                    INBOUND_MESSAGES, event, key=conversation_key(channel.id, payload.sender_id)
                )
            except PublishFailed as exc:
                log.warning("message not accepted, the broker did not acknowledge: %s", exc)
                raise service_unavailable(
                    "The message could not be stored durably right now; retry after "
                    "Retry-After seconds.",
                    5,
                ) from exc
            log.info("message accepted")
        return event

    @staticmethod
    def _entry(
        req: IncomingRequest,
        started: float,
        status: int,
        error_code: str | None,
        message_id: str | None,
        *,
        response_body: str | None = None,
        method: str = "POST",
    ) -> LogEntry:
        return LogEntry.model_construct(  # every field is ours: skip validation on the hot path
            id=new_log_id(),
            channel_id=req.channel_id,
            direction="incoming",
            created_at=datetime.now(UTC),
            method=method,
            url=req.path,
            status_code=status,
            error_code=error_code,
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
            request_body=cut(req.body, MAX_REQUEST_BODY) if req.body else None,
            response_body=response_body,
            message_id=message_id,
        )


def _replies_query(query: str) -> tuple[str | None, int]:
    """``after`` (a message id, 1-128 characters) and ``limit`` (1-100)."""
    try:
        params = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise invalid_payload("The query string is malformed.") from None
    problems: list[ErrorDetail] = []
    unknown = sorted(set(params) - {"after", "limit"})
    problems += [ErrorDetail(field=k, problem="unknown parameter") for k in unknown]
    problems += [
        ErrorDetail(field=k, problem="give it once") for k, v in params.items() if len(v) > 1
    ]
    after = params.get("after", [None])[0]
    if after is not None and not 1 <= len(after) <= 128:
        problems.append(ErrorDetail(field="after", problem="must be 1-128 characters"))
    raw_limit = params.get("limit", [str(REPLIES_PAGE)])[0] or ""
    limit = int(raw_limit) if raw_limit.isdigit() else 0
    if not 1 <= limit <= REPLIES_PAGE:
        problems.append(ErrorDetail(field="limit", problem=f"must be 1-{REPLIES_PAGE}"))
    if problems:
        raise invalid_payload(
            "The query is invalid: fix the parameters listed in details.", problems
        )
    return after, limit
