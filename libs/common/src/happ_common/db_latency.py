"""How long this process's database commands take, as a signal to back off.

Every service shares one database. When the consumers take all of it (a backlog
draining), the webhook's own writes wait in its queue behind their batches, and
the webhook, which an integrator is waiting on, slows down. The consumers are
the ones that can wait, so they watch the round trips of their own commands
(PyMongo's command monitoring, send to reply, the event loop's delays included)
and hold fewer records while those grow long (``InFlightLimit``).
"""

from __future__ import annotations

import time

from pymongo import monitoring

# Weight of each command in the moving average: about the last 20 count.
_ALPHA = 0.05
# A reading this old says nothing about now (no command meanwhile).
_STALE_S = 5.0


class DbLatency(monitoring.CommandListener):
    def __init__(self) -> None:
        self._ewma_ms: float | None = None
        self._at = 0.0

    def recent_ms(self) -> float | None:
        """The moving average of recent commands' round trips; None without a
        command in the last few seconds."""
        if self._ewma_ms is None or time.monotonic() - self._at > _STALE_S:
            return None
        return self._ewma_ms

    def _add(self, micros: int) -> None:
        ms = micros / 1000
        now = time.monotonic()
        # After a silence (an outage, an idle spell) the average starts afresh:
        # what came before says nothing about the database now.
        if self._ewma_ms is None or now - self._at > _STALE_S:
            self._ewma_ms = ms
        else:
            self._ewma_ms += _ALPHA * (ms - self._ewma_ms)
        self._at = now

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        self._add(event.duration_micros)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._add(event.duration_micros)


# One per process: every client of the process reports to it.
DB_LATENCY = DbLatency()
