"""The ``Clock`` seam: wall time for what is stored, monotonic time for what is measured."""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "MonotonicClock", "SystemClock"]


class MonotonicClock(Protocol):
    """What measures durations only (breaker, limiter) needs; every :class:`Clock` is one."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (durations, timeouts)."""
        ...


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch (stored in the outbox, survives restarts)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (durations, timeouts)."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()
