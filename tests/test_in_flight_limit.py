"""A consumer holds fewer records while its database commands are slow, and
more again once they are fast and what it may hold is in use
(happ_common.in_flight_limit, happ_common.db_latency)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest

from happ_common import db_latency
from happ_common.db_latency import DbLatency
from happ_common.in_flight_limit import FLOOR, InFlightLimit


class Reading:
    def __init__(self) -> None:
        self.ms: float | None = None

    def __call__(self) -> float | None:
        return self.ms


def test_slow_commands_lower_the_limit_to_its_floor_and_fast_busy_ones_raise_it_back() -> None:
    reading = Reading()
    limit = InFlightLimit(4096, latency_ms=reading, target_ms=20)
    now = 0.0
    reading.ms = 300.0
    seen = []
    for _ in range(30):
        now += 0.5
        seen.append(limit.update(4096, now))
    assert seen[0] < 4096 and seen == sorted(seen, reverse=True)
    assert seen[-1] == FLOOR
    # Checked twice a second, not at every fetch.
    assert limit.update(4096, now + 0.1) == FLOOR

    reading.ms = 5.0
    # Not using what it may hold: no reason to hold more.
    now += 0.5
    assert limit.update(10, now) == FLOOR
    grown = []
    for _ in range(200):
        now += 0.5
        grown.append(limit.update(limit.current, now))
    assert grown == sorted(grown) and grown[-1] == 4096


def test_without_a_reading_or_a_target_the_limit_stays_where_it_is() -> None:
    reading = Reading()
    limit = InFlightLimit(1000, latency_ms=reading, target_ms=20)
    assert limit.update(1000, 1.0) == 1000  # no command yet
    off = InFlightLimit(1000, latency_ms=lambda: 500.0, target_ms=0)
    assert [off.update(1000, t) for t in (1.0, 2.0, 3.0)] == [1000, 1000, 1000]
    small = InFlightLimit(10, latency_ms=lambda: 500.0, target_ms=20)
    assert small.update(10, 1.0) == 10  # never below a ceiling lower than the floor


def _event(micros: int) -> Any:
    return cast(Any, SimpleNamespace(duration_micros=micros))


def test_the_reading_follows_recent_round_trips_and_goes_stale(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [100.0]
    monkeypatch.setattr(db_latency, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    latency = DbLatency()
    assert latency.recent_ms() is None
    latency.succeeded(_event(10_000))
    assert latency.recent_ms() == pytest.approx(10.0)
    for _ in range(100):
        latency.failed(_event(200_000))
    reading = latency.recent_ms()
    assert reading is not None and 190 < reading <= 200
    clock[0] += 10
    assert latency.recent_ms() is None  # nothing lately: no say about now
    latency.succeeded(_event(4_000))
    assert latency.recent_ms() == pytest.approx(4.0)  # and the next one starts afresh
    latency.succeeded(_event(4_000))
    assert latency.recent_ms() == pytest.approx(4.0)  # and the next one starts afresh
