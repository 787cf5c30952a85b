"""The delivery side of ``happ_common.endpoint_health``: a failed or successful
attempt updates the channel's ``endpoint_failing_since`` only when it changes,
and a run of failures longer than ``HAPP_DELIVERY_AUTO_DISABLE_AFTER_HOURS``
turns the channel's deliveries off.

No database write per attempt: what the channel cache says is the state,
except right after this process changed it, when its own write is believed
until the cache has surely read it back (one cache lifetime).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

from prometheus_client import Counter

from happ_common.channels import Channel, DeliveriesDisabled
from happ_common.endpoint_health import EndpointHealthRepository

log = logging.getLogger(__name__)

DISABLED = Counter(
    "happ_delivery_channels_disabled_total",
    "Channels whose deliveries were turned off after their endpoint failed continuously",
)
_REMEMBERED_MAX = 10_000


class EndpointHealth:
    def __init__(
        self, repo: EndpointHealthRepository, *, disable_after_hours: float, cache_ttl_s: float
    ) -> None:
        self._repo = repo
        # 0 turns the automatic disable off (the failing time is still tracked).
        self._after = timedelta(hours=disable_after_hours) if disable_after_hours > 0 else None
        self._believe_s = cache_ttl_s + 0.5
        self._written: dict[str, tuple[float, datetime | None]] = {}

    def failing_since(self, channel: Channel) -> datetime | None:
        entry = self._written.get(channel.id)
        if entry is not None and time.monotonic() - entry[0] < self._believe_s:
            return entry[1]
        return channel.endpoint_failing_since

    def _remember(self, channel_id: str, value: datetime | None) -> None:
        if len(self._written) >= _REMEMBERED_MAX:
            now = time.monotonic()
            self._written = {k: v for k, v in self._written.items() if now - v[0] < self._believe_s}
        self._written[channel_id] = (time.monotonic(), value)

    async def succeeded(self, channel: Channel) -> None:
        if self.failing_since(channel) is None:
            return
        await self._repo.mark_ok(channel.id)
        self._remember(channel.id, None)
        log.info("channel %s: endpoint works again", channel.id)

    async def failed(self, channel: Channel, error_code: str | None) -> bool:
        """Record a failed attempt; True if it turned the channel's deliveries off."""
        now = datetime.now(UTC)
        since = self.failing_since(channel)
        if since is None:
            since = await self._repo.mark_failing(channel.id, now)
            self._remember(channel.id, since)
        if since is None or self._after is None or channel.deliveries_disabled is not None:
            return False
        if now - since < self._after:
            return False
        hours = (now - since).total_seconds() / 3600
        disabled = DeliveriesDisabled(
            at=now,
            message=(
                f"Deliveries turned off automatically: every attempt to the endpoint has failed "
                f"since {since.isoformat(timespec='seconds')} ({hours:.1f} h; last error "
                f"{error_code or 'unknown'}). Fix the endpoint, then connect the channel and "
                "recover the failed replies."
            ),
            failing_since=since,
            last_error_code=error_code,
        )
        if not await self._repo.disable(channel.id, disabled):
            # Its run of failures changed (or another replica won): ask the cache next time.
            self._written.pop(channel.id, None)
            return False
        DISABLED.inc()
        log.warning("channel %s: %s", channel.id, disabled.message)
        return True
