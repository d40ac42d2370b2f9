"""Pace sends to PagerDuty so that pdrelay itself never provokes a 429.

PagerDuty accepts about 120 events per minute per routing key, counted over a sliding
60 s window looking back from now, with account limits on top; above that it answers
429 and does not ingest the event. :class:`RateLimiter` keeps, per key, a log of the
monotonic times of the sends it allowed (a deque of the sends still in the window)
and allows a send only while fewer than ``limit`` of them fall in ``(now - window, now]``,
both for the key and, optionally, for all keys together.

Why a sliding-window log and not a token bucket: the log is PagerDuty's own accounting,
so pdrelay can use the whole budget and still never exceed it. A token bucket of the same
rate either bursts past the window (120 at t=0, then 2/s refill gives a 121st send at
t=0.5 inside the same 60 s window: a 429) or, sized to be safe, wastes most of the budget.

The limiter schedules rather than rejects: :meth:`RateLimiter.take` records a send when one
is allowed now, otherwise it records nothing, and :meth:`RateLimiter.next_allowed` and
:meth:`RateLimiter.blocked` say when there is room again — including a key paused after a
429 (:meth:`RateLimiter.penalize`). It is the only owner of that answer; it holds no queue
(the outbox does) and never sleeps; it is pure and synchronous on an injected clock.
A send at time ``s`` stops counting at exactly ``s + window``. If network jitter matters,
configure a window slightly longer than PagerDuty's (e.g. 61 s).

Keys are routing-key *names* from the configuration, never the secret keys themselves:
:meth:`RateLimiter.snapshot` shows them on /status.

It also remembers, per key (and for the global limit), the latest stretch of time it had
no room: from the moment it was found full (or paused) to when it has room again, a stretch
that begins again within :data:`receiver.slidingwindow.CONTINUES` of the previous one's end
continuing it (the freed slot was taken at once). :meth:`RateLimiter.waited` measures from it
how long an event ready at a given time waited for the budget: pdrelay_limiter_wait_seconds.

:class:`RateLimiter` is a :class:`~receiver.budget.Budget` (the dispatcher's seam; it and
:class:`~receiver.budget.RateLimit`, the settings, live in :mod:`receiver.budget` and are
importable from here); the window arithmetic is :mod:`receiver.slidingwindow`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from receiver.budget import Budget, RateLimit
from receiver.clock import MonotonicClock
from receiver.slidingwindow import Block, SlidingWindow

__all__ = ["Budget", "RateLimit", "RateLimiter"]


class _KeyState:
    __slots__ = ("blocked_until", "window")

    def __init__(self, limit: int, window: float) -> None:
        self.window = SlidingWindow(limit, window)
        self.blocked_until = -math.inf


class RateLimiter:
    """Per-routing-key (and optional global) sliding-window pacing on an injected monotonic clock."""

    def __init__(self, settings: RateLimit, clock: MonotonicClock) -> None:
        self._settings = settings
        self._clock = clock
        self._keys: dict[str, _KeyState] = {}
        self._global = SlidingWindow(*settings.global_limit) if settings.global_limit is not None else None
        self._global_block = Block()
        self._blocks: dict[str, Block] = {}  # per key: its latest stretch without room
        self._listed: dict[str, float] = {}  # what the last refresh() said was without room, until when
        self._listed_global = -math.inf
        self._sweep_every = min([settings.window_seconds, *(w for _, w in settings.overrides.values())])
        self._last_sweep = clock.monotonic()

    @property
    def settings(self) -> RateLimit:
        return self._settings

    def _state(self, key: str) -> _KeyState:
        st = self._keys.get(key)
        if st is None:
            st = self._keys[key] = _KeyState(*self._settings.for_key(key))
        return st

    def _next_allowed(self, key: str, now: float) -> float:
        st = self._keys.get(key)
        t = now
        if st is not None:
            t = max(t, st.blocked_until, st.window.next_allowed(now))
        if self._global is not None:
            t = max(t, self._global.next_allowed(now))
        return t

    def next_allowed(self, key: str) -> float:
        """The absolute monotonic time at which a send for ``key`` is allowed (now if it is allowed now)."""
        now = self._clock.monotonic()
        at = self._next_allowed(key, now)
        if at > now:
            self._note_block(key, now)
        return at

    def _note_block(self, key: str, now: float) -> None:
        """``key`` was found without room at ``now``: extend the stretches that say so (its own, the global)."""
        st = self._keys.get(key)
        if st is not None:
            own = max(st.blocked_until, st.window.next_allowed(now))
            if own > now:
                self._block(key).note(now, own)
        if self._global is not None and (glob := self._global.next_allowed(now)) > now:
            self._global_block.note(now, glob)

    def _block(self, key: str) -> Block:
        block = self._blocks.get(key)
        if block is None:
            block = self._blocks[key] = Block()
        return block

    def waited(self, key: str, ready: float) -> float:
        """How long a send for ``key`` that was ready at monotonic time ``ready`` has waited for room (0 if
        there was room when it was ready, or the key was never without room since)."""
        now = self._clock.monotonic()
        block = self._blocks.get(key)
        own = block.waited(ready, now) if block is not None else 0.0
        return max(own, self._global_block.waited(ready, now))

    def take(self, key: str) -> float | None:
        """Record a send for ``key`` if one is allowed now and return the time recorded, else ``None``."""
        now = self._clock.monotonic()
        self._sweep(now)
        if self._next_allowed(key, now) > now:
            self._note_block(key, now)
            return None
        self._state(key).window.record(now)
        if self._global is not None:
            self._global.record(now)
        if self._next_allowed(key, now) > now:  # this send used the last room: the key is full from now
            self._note_block(key, now)
        return now

    # The Budget seam: this window is in the process, so each step is done at once.

    async def refresh(self) -> tuple[dict[str, float], float]:
        now = self._clock.monotonic()
        keys, glob = self._blocked(now)
        self._listed, self._listed_global = dict(keys), glob if glob > now else -math.inf
        return keys, glob

    async def acquire(self, key: str) -> float | None:
        return self.take(key)

    async def confirm(self, key: str, taken_at: float, done_at: float) -> None:
        self.settle(key, taken_at, done_at)

    async def pause(self, key: str, seconds: float) -> None:
        self.penalize(key, seconds)

    def seed(self, sends: Iterable[tuple[str, float]]) -> int:
        """Count earlier sends, given as ``(key, seconds ago)``, as if this limiter had made them.

        Used at start-up with the send times the outbox kept, so a restart does not forget how
        much of PagerDuty's window is already used. Returns how many still fall in a window.
        """
        now = self._clock.monotonic()
        counted = 0
        for key, ago in sorted(sends, key=lambda s: -s[1]):  # oldest first: the logs stay ordered
            at = now - max(ago, 0.0)
            st = self._state(key)
            if at + st.window.window > now:
                st.window.record(at)
                counted += 1
            if self._global is not None and at + self._global.window > now:
                self._global.record(at)
        for key in list(self._keys):
            self._note_block(key, now)
        return counted

    def settle(self, key: str, taken_at: float, done_at: float) -> None:
        """The send recorded at ``taken_at`` got its answer at ``done_at``: count it from then.

        PagerDuty counts an event when it arrives, somewhere between the two; counting from
        the answer is the safe side, so slow connections and jitter never push a later send
        into PagerDuty's window (measured: 19–37 429s in a 300-event storm without this).
        """
        st = self._keys.get(key)
        if st is not None:
            st.window.move(taken_at, done_at)
        if self._global is not None:
            self._global.move(taken_at, done_at)

    def penalize(self, key: str, seconds: float) -> None:
        """Block ``key`` until now + ``seconds`` (after a 429); an existing longer block is kept."""
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not math.isfinite(seconds) \
                or seconds < 0:
            raise ValueError(f"penalize: seconds must be a non-negative number, got {seconds!r}")
        now = self._clock.monotonic()
        st = self._state(key)
        st.blocked_until = max(st.blocked_until, now + seconds)
        if st.blocked_until > now:
            self._block(key).note(now, st.blocked_until)

    def blocked(self) -> tuple[dict[str, float], float]:
        """Who has no budget now: ``({key: monotonic time it has room again}, time the global limit has room)``.

        The one answer to "when may this key send again" (its window, and a 429's pause): the
        dispatcher leaves these keys out of its claims and sleeps until the earliest of them.

        A key that the last :meth:`refresh` listed (or every key, for the global limit) and whose room has
        come since is listed once more, with that time, now past: the dispatcher, busy reading the queue
        when it came, looks again at once rather than after its longest idle wait."""
        now = self._clock.monotonic()
        keys, glob = self._blocked(now)
        if self._listed:
            for key, at in self._listed.items():
                if key not in keys and at <= now:
                    keys[key] = at
            self._listed = {}
        if -math.inf < self._listed_global <= now:
            for key in self._keys:
                keys.setdefault(key, self._listed_global)
            self._listed_global = -math.inf
        return keys, glob

    def _blocked(self, now: float) -> tuple[dict[str, float], float]:
        keys = {}
        for key, st in self._keys.items():
            at = max(st.blocked_until, st.window.next_allowed(now))
            if at > now:
                keys[key] = at
                self._block(key).note(now, at)
        glob = self._global.next_allowed(now) if self._global is not None else now
        if glob > now:
            self._global_block.note(now, glob)
        return keys, glob

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready view for /status: per key its limit, window, sends in the window and any block."""
        now = self._clock.monotonic()
        self._sweep(now, force=True)
        keys: dict[str, dict[str, Any]] = {}
        for key, st in sorted(self._keys.items()):
            entry: dict[str, Any] = {"limit": st.window.limit, "window_seconds": st.window.window,
                                     "used": st.window.used(now)}
            if st.blocked_until > now:
                entry["blocked_until"] = st.blocked_until
                entry["blocked_for"] = st.blocked_until - now
            keys[key] = entry
        glob: dict[str, Any] | None = None
        if self._global is not None:
            glob = {"limit": self._global.limit, "window_seconds": self._global.window,
                    "used": self._global.used(now)}
        return {"keys": keys, "global": glob}

    def budget(self, key: str) -> tuple[int, int, float, float]:
        """For /status: ``(used, limit, window_seconds, next_send_in)`` of ``key``: sends in its window now,
        its limit and window, and seconds until it may send (0 when it may now; the global limit and a
        429's pause included). Reads only."""
        now = self._clock.monotonic()
        limit, window = self._settings.for_key(key)
        st = self._keys.get(key)
        used = st.window.used(now) if st is not None else 0
        return used, limit, window, max(0.0, self._next_allowed(key, now) - now)

    def _sweep(self, now: float, *, force: bool = False) -> None:
        """Forget keys with no send in their window and no block, and stretches without room that ended more
        than a sweep ago (a send still waiting is measured by a recent one): memory stays bounded by the
        active keys."""
        if not force and now - self._last_sweep < self._sweep_every:
            return
        self._last_sweep = now
        idle = [k for k, st in self._keys.items() if st.blocked_until <= now and st.window.used(now) == 0]
        for k in idle:
            del self._keys[k]
        for k in [k for k, b in self._blocks.items() if b.end <= now - self._sweep_every]:
            del self._blocks[k]
