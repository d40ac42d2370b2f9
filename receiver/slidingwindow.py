"""The arithmetic of a sliding-window log, shared by the in-process and the Redis-backed budgets.

:class:`SlidingWindow` is one log of send times (per routing key, or for the global limit):
how many sends fall in ``(now - window, now]`` and when there is room for one more.
:class:`Block` is the latest stretch of time a key (or the global limit) had no room, from which
the limiters measure how long an event waited for the budget (pdrelay_limiter_wait_seconds).
Both are pure and synchronous: times are whatever monotonic clock the caller reads.
"""

from __future__ import annotations

import math
from collections import deque

__all__ = ["CONTINUES", "Block", "SlidingWindow"]


CONTINUES = 0.5
"""Seconds: a key found without room again this soon after it had room never really had any (the slot
freed was taken at once, or the dispatcher was a moment late to it)."""


class Block:
    """The latest stretch of monotonic time without room: ``[start, end]`` (``start`` None: none yet)."""

    __slots__ = ("end", "start")

    def __init__(self) -> None:
        self.start: float | None = None
        self.end = -math.inf

    def note(self, now: float, until: float) -> None:
        """Found without room at ``now``, until ``until``."""
        if self.start is None or now > self.end + CONTINUES:
            self.start = now
        self.end = max(self.end, until)

    def waited(self, ready: float, now: float) -> float:
        """How much of ``[ready, now]`` this stretch covers."""
        if self.start is None:
            return 0.0
        return max(0.0, min(now, self.end) - max(ready, self.start))


class SlidingWindow:
    """A sliding-window log: the times of the sends still inside the window, oldest first."""

    __slots__ = ("limit", "sends", "window")

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self.sends: deque[float] = deque()

    def prune(self, now: float) -> None:
        sends, window = self.sends, self.window
        while sends and sends[0] + window <= now:
            sends.popleft()

    def used(self, now: float) -> int:
        self.prune(now)
        return len(self.sends)

    def next_allowed(self, now: float) -> float:
        """The earliest time, not before ``now``, at which this window has room for one more send."""
        self.prune(now)
        excess = len(self.sends) - self.limit
        if excess < 0:
            return now
        # The oldest ``excess + 1`` sends must leave; none may be added meanwhile (nothing was allowed).
        return self.sends[excess] + self.window

    def record(self, now: float) -> None:
        self.sends.append(now)

    def move(self, old: float, new: float) -> None:
        """Count the send recorded at ``old`` as made at ``new`` (later) instead; keeps the order."""
        sends = self.sends
        for i in range(len(sends) - 1, -1, -1):
            if sends[i] == old:
                del sends[i]
                break
        else:
            return  # already out of the window
        i = len(sends)
        while i > 0 and sends[i - 1] > new:
            i -= 1
        sends.insert(i, new)
