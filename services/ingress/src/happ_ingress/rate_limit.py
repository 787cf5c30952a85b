"""Per-channel token buckets, in memory: no request waits on shared storage."""

from __future__ import annotations

import math
import time


class TokenBuckets:
    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}  # channel -> (tokens, last refill)

    def take(self, channel_id: str, rate_per_s: float) -> float:
        """Take one token. Returns 0 when allowed, else the seconds until one is free."""
        now = time.monotonic()
        # A bucket holds one second's worth of tokens (at least one): bursts up to
        # the per-second limit pass, sustained excess does not.
        capacity = max(1.0, rate_per_s)
        tokens, last = self._buckets.get(channel_id, (capacity, now))
        tokens = min(capacity, tokens + (now - last) * rate_per_s)
        if tokens >= 1.0:
            self._buckets[channel_id] = (tokens - 1.0, now)
            return 0.0
        self._buckets[channel_id] = (tokens, now)
        return (1.0 - tokens) / rate_per_s

    @staticmethod
    def retry_after_header(wait_s: float) -> str:
        return str(max(1, math.ceil(wait_s)))
