"""Channel management: create, read, change, disconnect, connect, rotate the secret."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from pydantic import ValidationError

from happ_admin.channels.schemas import ChannelCreate, ChannelUpdate
from happ_admin.cursors import page_of
from happ_admin.errors import CHANNEL_NOT_FOUND
from happ_common import custom_headers
from happ_common.channels import (
    RULE_FIELDS,
    AssistantSettings,
    Channel,
    ChannelRepository,
    ConversationRules,
    rotation_expiry,
)
from happ_common.endpoint_health import CLEARED
from happ_common.errors import ErrorDetail, HappError, details_from_validation, invalid_payload
from happ_common.ids import CHANNEL_ID_RE, new_channel_id, new_channel_secret
from happ_common.mongo import Document
from happ_common.settings import HappSettings
from happ_common.urls import UrlRejected, check_https_url, resolve_and_check


def merge_headers(current: dict[str, str], patch: dict[str, str | None]) -> dict[str, str]:
    """A PATCH of a channel's headers: a value sets or replaces the header of
    that name in any case (the new spelling wins), null removes it."""
    seen: set[str] = set()
    for name in patch:
        if name.lower() in seen:
            raise _refused([(name, "the same header twice in one request (names ignore case)")])
        seen.add(name.lower())
    merged = dict(current)
    for name, value in patch.items():
        for old in [n for n in merged if n.lower() == name.lower()]:
            del merged[old]
        if value is not None:
            merged[name] = value
    return merged


def _check_headers(headers: dict[str, str]) -> None:
    found = custom_headers.problems(headers)
    if found:
        raise _refused(found)


def _refused(found: list[tuple[str, str]]) -> HappError:
    """422 naming each header refused, one detail per problem."""
    named = ", ".join(sorted({name for name, _ in found if name}))
    return invalid_payload(
        f"Outgoing headers refused{': ' + named if named else ''}; see details.",
        [
            ErrorDetail(
                field=f"outgoing_headers.{name}" if name else "outgoing_headers",
                problem=problem,
            )
            for name, problem in found
        ],
    )


def channel_not_found(channel_id: str) -> HappError:
    return CHANNEL_NOT_FOUND(f"No channel {channel_id!r} exists.")


class ChannelService:
    def __init__(self, repo: ChannelRepository, happ: HappSettings) -> None:
        self._repo = repo
        self._happ = happ

    async def validate_url(self, url: str) -> str:
        try:
            check_https_url(url)
            await asyncio.to_thread(
                resolve_and_check, url, allow_private=self._happ.allow_private_endpoints
            )
        except UrlRejected as exc:
            raise exc.kind(
                exc.message, [ErrorDetail(field="outgoing_url", problem=exc.message)]
            ) from exc
        return url

    async def create(self, req: ChannelCreate) -> Channel:
        if req.outgoing_url:
            await self.validate_url(req.outgoing_url)
        _check_headers(req.outgoing_headers)
        now = datetime.now(UTC)
        # MongoDB keeps milliseconds: answer with what a later GET will return.
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)
        channel = Channel(
            id=new_channel_id(),
            name=req.name,
            outgoing_url=req.outgoing_url,
            delivery=req.delivery,
            hmac_secret=new_channel_secret(),
            require_signature=req.require_signature,
            rate_limit_per_second=req.rate_limit_per_second,
            assistant=req.assistant,
            outgoing_headers=req.outgoing_headers,
            typing_events=req.typing_events,
            outgoing_rate_per_second=req.outgoing_rate_per_second,
            outgoing_max_concurrency=req.outgoing_max_concurrency,
            **{k: getattr(req, k) for k in RULE_FIELDS},
            created_at=now,
            updated_at=now,
        )
        await self._repo.insert(channel)
        return channel

    async def find(self, channel_id: str) -> Channel | None:
        return await self._repo.get(channel_id) if CHANNEL_ID_RE.match(channel_id) else None

    async def get(self, channel_id: str) -> Channel:
        channel = await self._repo.get(channel_id) if CHANNEL_ID_RE.match(channel_id) else None
        if channel is None:
            raise channel_not_found(channel_id)
        return channel

    async def list(
        self, cursor: str | None, limit: int, *, only: frozenset[str] | None = None
    ) -> tuple[list[Channel], str | None]:
        items = await self._repo.list(after=cursor, limit=limit + 1, only=only)
        return page_of(items, limit, lambda c: c.id)

    async def update(self, channel_id: str, req: ChannelUpdate) -> Channel:
        current = await self.get(channel_id)
        # null leaves a field unchanged: none of these may be unset.
        fields: Document = {
            k: v
            for k, v in req.model_dump(
                exclude_unset=True, exclude={"assistant", "outgoing_headers", *RULE_FIELDS}
            ).items()
            if v is not None
        }
        if req.outgoing_headers:
            headers = merge_headers(current.outgoing_headers, req.outgoing_headers)
            _check_headers(headers)
            fields["outgoing_headers"] = headers
        rules = req.rules_patch()
        if rules:
            try:
                merged_rules = ConversationRules.model_validate(
                    {**current.model_dump(include=set(RULE_FIELDS)), **rules}
                )
            except ValidationError as exc:
                raise invalid_payload(
                    "The channel's rules are invalid: fix the fields listed in details.",
                    details_from_validation(exc),
                ) from exc
            fields.update(merged_rules.model_dump(include=set(rules)))
        if req.outgoing_url:  # "" removes it (allowed only for delivery: response, below)
            await self.validate_url(req.outgoing_url)
        delivery = fields.get("delivery", current.delivery)
        if delivery != "response" and not fields.get("outgoing_url", current.outgoing_url):
            raise invalid_payload(
                "A channel whose replies are POSTed needs an outgoing_url.",
                [
                    ErrorDetail(
                        field="outgoing_url", problem="required unless delivery is 'response'"
                    )
                ],
            )
        if req.assistant is not None:
            patch = req.assistant.model_dump(exclude_unset=True)
            # Only the model may be null (the service's default model); a null
            # anywhere else means "unchanged".
            patch = {k: v for k, v in patch.items() if v is not None or k == "model"}
            try:
                merged = AssistantSettings.model_validate(
                    {**current.assistant.model_dump(), **patch}
                )
            except ValidationError as exc:
                raise invalid_payload(
                    "The assistant settings are invalid: fix the fields listed in details.",
                    [
                        ErrorDetail(field=f"assistant.{d.field}", problem=d.problem)
                        for d in details_from_validation(exc)
                    ],
                ) from exc
            fields["assistant"] = merged.model_dump()
        return await self._set(channel_id, fields)

    async def disconnect(self, channel_id: str) -> Channel:
        await self.get(channel_id)
        return await self._set(channel_id, {"status": "disconnected"})

    async def connect(self, channel_id: str, outgoing_url: str | None) -> Channel:
        await self.get(channel_id)
        # Connecting is also how deliveries turned off automatically come back:
        # the endpoint starts with a clean record (happ_common.endpoint_health).
        fields: Document = {"status": "connected", **CLEARED}
        if outgoing_url is not None:
            fields["outgoing_url"] = await self.validate_url(outgoing_url)
        return await self._set(channel_id, fields)

    async def rotate_secret(self, channel_id: str) -> Channel:
        current = await self.get(channel_id)
        return await self._set(
            channel_id,
            {
                "hmac_secret": new_channel_secret(),
                "previous_secret": current.hmac_secret,
                "previous_secret_expires_at": rotation_expiry(self._happ.secret_overlap_hours),
            },
        )

    async def _set(self, channel_id: str, fields: Document) -> Channel:
        channel = await self._repo.update(channel_id, fields)
        if channel is None:
            raise channel_not_found(channel_id)
        return channel
