"""What Redis last said of the shared budget, mirrored in this process for synchronous reads.

:class:`SharedView` is the local half of :class:`receiver.sharedlimit.SharedRateLimiter`: it keeps,
per routing-key name, the sends in the window, when the key has room again and a 429's pause, all
on this process's monotonic clock, and answers the :class:`~receiver.budget.Budget` reads
(:meth:`~SharedView.next_allowed`, :meth:`~SharedView.blocked`, :meth:`~SharedView.waited`,
:meth:`~SharedView.budget`, :meth:`~SharedView.snapshot`) from it. It never talks to Redis;
the limiter's calls to Redis update it.

The view can only be late in saying "room" (sends leave a window only by time, a pause is never
shortened), and a take in Redis settles it. The dispatcher refreshes it on each look at the queue
(one script call); /status reads it as of then.
A key refused until ``t`` is listed by :meth:`blocked` once more with ``t`` even once past, if
Redis was not asked since: the dispatcher, busy reading the queue when ``t`` came, then looks
again at once instead of after its longest idle wait (as :class:`~receiver.limiter.RateLimiter`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from receiver.budget import RateLimit
from receiver.clock import Clock
from receiver.slidingwindow import Block

__all__ = ["Seen", "SharedView"]


class Seen:
    """What Redis last said of one key, on this process's monotonic clock."""

    __slots__ = ("at", "paused", "stale", "used")

    def __init__(self) -> None:
        self.used = 0
        self.at = -math.inf  # room again (window and pause)
        self.paused = -math.inf  # a 429's pause ends
        self.stale = False  # the last answer was "no room until at": Redis not asked since

    def heard(self, at: float, now: float) -> None:
        self.at, self.stale = at, at > now


class SharedView:
    """The local view of the shared window: what Redis last answered, read without waiting for it."""

    def __init__(self, settings: RateLimit, clock: Clock, names: Iterable[str]) -> None:
        self._settings = settings
        self._clock = clock
        self._names = frozenset(names)
        self._seen: dict[str, Seen] = {name: Seen() for name in sorted(self._names)}
        self._global_used = 0
        self._global_at = -math.inf
        self._global_stale = False
        self._down_until = -math.inf  # monotonic: Redis failed; no send before this
        self._blocks: dict[str, Block] = {}
        self._global_block = Block()

    @property
    def settings(self) -> RateLimit:
        return self._settings

    def _now(self) -> tuple[float, float]:
        """(wall, monotonic) read together: a Redis time ``t`` is ``t - wall + mono`` here."""
        return self._clock.now(), self._clock.monotonic()

    def _state(self, key: str) -> Seen:
        seen = self._seen.get(key)
        if seen is None:
            seen = self._seen[key] = Seen()
        return seen

    def _block(self, key: str) -> Block:
        block = self._blocks.get(key)
        if block is None:
            block = self._blocks[key] = Block()
        return block

    def _key_at(self, key: str) -> float:
        seen = self._seen.get(key)
        return max(self._down_until, seen.at if seen is not None else -math.inf)

    def _note(self, key: str, now: float) -> None:
        """Extend the stretches without room of ``key`` and the global limit that are true at ``now``."""
        if (own := self._key_at(key)) > now:
            self._block(key).note(now, own)
        if (glob := max(self._global_at, self._down_until)) > now:
            self._global_block.note(now, glob)

    def next_allowed(self, key: str) -> float:
        """When ``key`` may send, on the monotonic clock, as far as Redis last said (a take confirms it)."""
        now = self._clock.monotonic()
        at = max(now, self._key_at(key), self._global_at)
        if at > now:
            self._note(key, now)
        return at

    def blocked(self) -> tuple[dict[str, float], float]:
        """Keys without room as of the last answer from Redis, and when the global limit has room (while Redis
        is unreachable: when to try again). Also, once, a key whose room has come since Redis said it had
        none, with that time (past: the dispatcher looks again at once)."""
        return self._blocked(nudge=True)

    def _blocked(self, *, nudge: bool) -> tuple[dict[str, float], float]:
        now = self._clock.monotonic()
        keys = {}
        global_passed = nudge and self._global_stale and self._global_at <= now
        if global_passed:
            self._global_stale = False
        for key, seen in self._seen.items():
            at = self._key_at(key)
            if at > now:
                keys[key] = at
                self._block(key).note(now, at)
            elif nudge and (seen.stale or global_passed):
                # Its room came after the last answer, perhaps while the dispatcher was busy elsewhere: a time
                # in the past says "look again now" (refresh() asks Redis, and lists only keys without room).
                keys[key] = max(at, self._global_at)
                seen.stale = False
        glob = max(now, self._global_at, self._down_until)
        if glob > now:
            self._global_block.note(now, glob)
        return keys, glob

    def waited(self, key: str, ready: float) -> float:
        """As :meth:`RateLimiter.waited <receiver.limiter.RateLimiter.waited>`, from what this replica saw."""
        now = self._clock.monotonic()
        block = self._blocks.get(key)
        own = block.waited(ready, now) if block is not None else 0.0
        return max(own, self._global_block.waited(ready, now))

    def seed(self, sends: Iterable[tuple[str, float]]) -> int:
        """Counts nothing: the window lives in Redis already, and every replica seeding it from the shared
        outbox would count each send once per replica."""
        return 0

    def budget(self, key: str) -> tuple[int, int, float, float]:
        """For /status, as :meth:`RateLimiter.budget <receiver.limiter.RateLimiter.budget>` (as of the last
        answer from Redis)."""
        now = self._clock.monotonic()
        limit, window = self._settings.for_key(key)
        seen = self._seen.get(key)
        used = seen.used if seen is not None else 0
        return used, limit, window, max(0.0, self._key_at(key) - now, self._global_at - now)

    def snapshot(self) -> dict[str, Any]:
        """The same shape as :meth:`RateLimiter.snapshot <receiver.limiter.RateLimiter.snapshot>`, as of the
        last answer from Redis (:meth:`refresh` first for a fresh one)."""
        now = self._clock.monotonic()
        keys: dict[str, dict[str, Any]] = {}
        for key, seen in sorted(self._seen.items()):
            limit, window = self._settings.for_key(key)
            entry: dict[str, Any] = {"limit": limit, "window_seconds": window, "used": seen.used}
            if seen.paused > now:
                entry["blocked_until"] = seen.paused
                entry["blocked_for"] = seen.paused - now
            keys[key] = entry
        glob: dict[str, Any] | None = None
        if self._settings.global_limit is not None:
            limit, window = self._settings.global_limit
            glob = {"limit": limit, "window_seconds": window, "used": self._global_used}
        return {"keys": keys, "global": glob}

    def _sweep(self, now: float) -> None:
        """Forget keys not configured that have no send in the window and no block: the view stays bounded."""
        idle = [k for k, s in self._seen.items() if k not in self._names and s.used == 0 and s.at <= now]
        for k in idle:
            del self._seen[k]
        for k in [k for k, b in self._blocks.items() if b.end <= now - self._settings.longest_window]:
            del self._blocks[k]
