"""Pacing: spread paid retrieval jobs over time, like the AWS vault-to-S3
solution's daily quota, and back off when Glacier's data retrieval policy says
no. The history of what was started is the caller's (it survives a restart),
and so is the clock, so a test can move time instead of sleeping."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

log = logging.getLogger(__name__)

DAY = 24 * 3600.0
HOUR = 3600.0
# A PolicyEnforcedException pauses new jobs this long at first, doubling up to an hour.
FIRST_BACKOFF = 60.0
LAST_BACKOFF = 3600.0


class Pacer:
    def __init__(
        self,
        history: Callable[[float], list[tuple[float, int]]],
        max_bytes_per_day: int | None = None,
        max_jobs_per_hour: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``history(since)``: (time, bytes) of the jobs started since then, oldest first."""
        self.history = history
        self.max_bytes_per_day = max_bytes_per_day
        self.max_jobs_per_hour = max_jobs_per_hour
        self.clock = clock
        self._held_until = 0.0
        self._backoff = FIRST_BACKOFF

    def when(self, size: int, pending: Sequence[tuple[float, int]] = ()) -> float:
        """The earliest time a job of ``size`` bytes may start (now, or later);
        ``pending``: (time, bytes) of jobs being started, not yet in the history."""
        now = self.clock()
        earliest = max(now, self._held_until)

        def started_since(since: float) -> list[tuple[float, int]]:
            return sorted([*self.history(since), *(job for job in pending if job[0] >= since)])

        if self.max_jobs_per_hour is not None:
            started = started_since(now - HOUR)
            if len(started) >= self.max_jobs_per_hour:
                # The window frees up as the oldest job that fills it leaves it.
                earliest = max(earliest, started[len(started) - self.max_jobs_per_hour][0] + HOUR)
        if self.max_bytes_per_day is not None:
            started = started_since(now - DAY)
            used = sum(size for _, size in started)
            if used + size > self.max_bytes_per_day:
                if size > self.max_bytes_per_day:
                    # It can never fit: let it start alone, once the day's window is empty.
                    return max(earliest, started[-1][0] + DAY) if started else earliest
                for at, spent in started:
                    used -= spent
                    if used + size <= self.max_bytes_per_day:
                        earliest = max(earliest, at + DAY)
                        break
        return earliest

    def may_start(self, size: int, pending: Sequence[tuple[float, int]] = ()) -> bool:
        return self.when(size, pending) <= self.clock()

    def refused(self, why: str) -> float:
        """Glacier refused a job (its data retrieval policy): hold new jobs for a while, doubling."""
        self._held_until = self.clock() + self._backoff
        log.warning(
            "Glacier refused a retrieval job (%s): no new job for %.0f s; the export goes on", why, self._backoff
        )
        self._backoff = min(self._backoff * 2, LAST_BACKOFF)
        return self._held_until

    def accepted(self) -> None:
        self._backoff = FIRST_BACKOFF
