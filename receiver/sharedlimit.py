"""PagerDuty's per-routing-key budget shared by every pdrelay replica, kept in Redis.

:class:`~receiver.limiter.RateLimiter` paces one process. With ``outbox.backend: redis`` several
replicas send for the same routing keys, and each pacing itself as if alone would let N replicas
provoke N times the 429s. :class:`SharedRateLimiter` keeps the sliding-window log in Redis instead,
so the replicas together take at most ``limit`` sends per window, and a 429 pauses the key for all.

What is stored (``<p>`` is the key prefix; every key carries the one hash tag ``{<p>}``, as the Redis
outbox's keys do, so a Redis Cluster keeps them in one slot and one script may touch them all):

- ``{<p>}:limit:<name>`` — a sorted set per routing-key *name* (never the secret key): one member per
  send still in the window, ``<replica id>:<sequence>``, scored with its send time. Expires a second
  after its window once idle.
- ``{<p>}:limit-global`` — the same for the optional global limit (all keys together).
- ``{<p>}:limit-pause:<name>`` — the deadline of a 429's pause, a string with an expiry: while it is
  in the future no replica sends for ``<name>``. A later 429 never shortens it.

What runs atomically (Lua in :mod:`receiver.sharedlimit_scripts`, by EVALSHA; redis-py's script
object loads it again on ``NOSCRIPT``):

- *take*: trim the key's (and the global) log to the window, count, read the pause; when both
  counts are under their limits and the key is not paused, add the send to both logs and answer
  yes; else add nothing and answer when room comes back (the oldest send that must leave, plus
  the window; or the pause's end). Two replicas can never both take the last slot.
- *peek*: the same reading for every key this replica knows, without adding: what
  :meth:`SharedRateLimiter.refresh` keeps in its local view for the dispatcher and /status.
- *pause*: set the pause deadline unless a later one is already set.
- *settle* (a MULTI, not a script): re-score a send at the time its answer came (``ZADD XX``), as
  the in-process limiter does, so a slow request never lets a later send into PagerDuty's window.

Time: the scripts use the caller's wall clock (``Clock.now()``), not Redis ``TIME``. Monotonic
clocks mean nothing across processes, so it is one of the two wall clocks; the caller's is the
one the outbox already stores due times and leases in, and the one tests replace with a fake
clock (a window cannot be tested without moving time). The price is clock skew between replicas:
a replica whose clock runs ``d`` ahead sees the others' sends leave the window ``d`` early. NTP
keeps ``d`` in milliseconds, the size of the margin that counting a send from its answer already
adds; with worse clocks, set ``window_seconds`` longer than PagerDuty's by the skew. Every
replica must use the same ``rate_limit`` settings. Expiries are set in Redis time and only bound
memory: a script never trusts an expiry, it compares times.

Locally the limiter keeps what Redis last answered, so the dispatcher's and /status's reads stay
synchronous: that mirror is :class:`receiver.sharedview.SharedView`, which this limiter extends
with the Redis calls that bring it up to date.

Redis unreachable (or failing, or not answering within ``timeout`` seconds, whatever the client's
own timeouts and retries): the limiter never lets a send through blindly, never raises into the
dispatcher and never holds it up longer than ``timeout``. A failed take answers "no room"; for
``retry_after`` seconds every key then counts as without room (``blocked`` says so through the
global time, so the dispatcher sleeps), and the next take or refresh tries Redis again. A failed
settle or pause is dropped (this replica still pauses the key itself). Each failure counts in
``pdrelay_limiter_store_errors_total``; the log says once when the budget became unreachable and
once when it is back.
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections import deque
from collections.abc import Callable, Iterable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from receiver import sharedlimit_scripts as scripts
from receiver.budget import RateLimit
from receiver.clock import Clock
from receiver.sharedview import SharedView

__all__ = ["SharedRateLimiter"]

_STORE_ERRORS = (RedisError, OSError, TimeoutError)


def _fmt(t: float) -> str:
    return repr(float(t))


def _check_prefix(prefix: object) -> str:
    if not isinstance(prefix, str) or not prefix or "{" in prefix or "}" in prefix:
        raise ValueError(f"shared rate limit: key prefix must be a non-empty string without braces, got {prefix!r}")
    return prefix


class SharedRateLimiter(SharedView):
    """The per-key (and optional global) sliding window of :mod:`receiver.limiter`, kept in Redis for every
    replica; a :class:`~receiver.budget.Budget`. Its synchronous reads are :class:`SharedView`'s."""

    def __init__(
        self,
        settings: RateLimit,
        clock: Clock,
        redis: Redis,
        prefix: str,
        *,
        names: Iterable[str] = (),
        retry_after: float = 1.0,
        timeout: float = 2.0,
        on_error: Callable[[], None] = lambda: None,
        log: logging.Logger | None = None,
    ) -> None:
        prefix = _check_prefix(prefix)
        for what, value in (("retry_after", retry_after), ("timeout", timeout)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
                    or value <= 0:
                raise ValueError(f"shared rate limit: {what} must be a positive number of seconds, got {value!r}")
        super().__init__(settings, clock, names)
        self._redis = redis
        self._tag = "{" + prefix + "}"
        self._retry_after = float(retry_after)
        self._timeout = float(timeout)
        self._on_error = on_error
        self._log = log or logging.getLogger(__name__)
        self._take = redis.register_script(scripts.TAKE)
        self._peek = redis.register_script(scripts.PEEK)
        self._pause = redis.register_script(scripts.PAUSE)
        self._id = uuid.uuid4().hex[:12]
        self._seq = 0
        self._down = False
        self._members: dict[tuple[str, float], deque[str]] = {}  # (key, taken_at) → members not yet settled

    # ------------------------------------------------------------------ keys

    def window_key(self, name: str) -> str:
        return f"{self._tag}:limit:{name}"

    def pause_key(self, name: str) -> str:
        return f"{self._tag}:limit-pause:{name}"

    @property
    def global_key(self) -> str:
        return f"{self._tag}:limit-global"

    # ------------------------------------------------------------------ Redis

    def _failed(self, what: str, exc: BaseException) -> None:
        self._on_error()
        self._down_until = self._clock.monotonic() + self._retry_after
        if not self._down:
            self._down = True
            self._log.warning("shared rate budget unreachable in Redis; sends wait and retry",
                              extra={"operation": what, "error": type(exc).__name__,
                                     "retry_after": self._retry_after})

    def _reached(self) -> None:
        self._down_until = -math.inf
        if self._down:
            self._down = False
            self._log.info("shared rate budget reachable in Redis again")

    async def acquire(self, key: str) -> float | None:
        """Take a send for ``key`` in Redis if the shared window has room now: the monotonic time recorded,
        else ``None`` (also while Redis is unreachable)."""
        wall, mono = self._now()
        if self._down_until > mono:
            self._note(key, mono)
            return None
        limit, window = self._settings.for_key(key)
        self._seq += 1
        member = f"{self._id}:{self._seq}"
        keys = [self.window_key(key), self.pause_key(key)]
        args: list[str | int] = [_fmt(wall), limit, _fmt(window), member]
        if self._settings.global_limit is not None:
            keys.append(self.global_key)
            args += [self._settings.global_limit[0], _fmt(self._settings.global_limit[1])]
        try:
            async with asyncio.timeout(self._timeout):
                answer = await self._take(keys=keys, args=args)
        except _STORE_ERRORS as exc:
            self._failed("take", exc)
            self._note(key, mono)
            return None
        self._reached()
        taken, at, gat, used, gused = answer
        seen = self._state(key)
        seen.used = int(used)
        seen.heard(float(at) - wall + mono, mono)
        self._global_at, self._global_used = float(gat) - wall + mono, int(gused)
        self._global_stale = self._global_at > mono
        self._note(key, mono)
        if not int(taken):
            return None
        self._forget_members(mono)
        self._members.setdefault((key, mono), deque()).append(member)
        return mono

    def _forget_members(self, now: float) -> None:
        """Drop sends never settled (cancelled at shutdown) once no window could still hold them."""
        horizon = now - self._settings.longest_window
        while self._members:
            (_, at) = next(iter(self._members))
            if at > horizon:
                return
            del self._members[next(iter(self._members))]

    async def confirm(self, key: str, taken_at: float, done_at: float) -> None:
        """The send taken at ``taken_at`` got its answer at ``done_at``: count it from then, for everyone."""
        members = self._members.get((key, taken_at))
        if not members:
            return
        member = members.popleft()
        if not members:
            del self._members[(key, taken_at)]
        score = _fmt(self._clock.now() - (self._clock.monotonic() - done_at))
        _, window = self._settings.for_key(key)
        try:
            async with asyncio.timeout(self._timeout), self._redis.pipeline(transaction=True) as pipe:
                pipe.zadd(self.window_key(key), {member: score}, xx=True)
                pipe.pexpire(self.window_key(key), math.ceil(window * 1000) + 1000)
                if self._settings.global_limit is not None:
                    pipe.zadd(self.global_key, {member: score}, xx=True)
                    pipe.pexpire(self.global_key, math.ceil(self._settings.global_limit[1] * 1000) + 1000)
                await pipe.execute()
        except _STORE_ERRORS as exc:
            self._failed("settle", exc)

    async def pause(self, key: str, seconds: float) -> None:
        """Pause ``key`` for ``seconds`` for every replica (after a 429); a longer pause in force is kept."""
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not math.isfinite(seconds) \
                or seconds < 0:
            raise ValueError(f"pause: seconds must be a non-negative number, got {seconds!r}")
        wall, mono = self._now()
        seen = self._state(key)
        deadline = mono + seconds
        seen.paused = max(seen.paused, deadline)
        seen.heard(max(seen.at, deadline), mono)
        self._note(key, mono)
        if seconds == 0:
            return
        try:
            async with asyncio.timeout(self._timeout):
                answer = await self._pause(keys=[self.pause_key(key)],
                                           args=[_fmt(wall + seconds), math.ceil(seconds * 1000) + 1000])
        except _STORE_ERRORS as exc:
            self._failed("pause", exc)
            return
        self._reached()
        in_force = float(answer) - wall + mono
        seen.paused = max(seen.paused, in_force)
        seen.heard(max(seen.at, in_force), mono)
        self._note(key, mono)

    async def refresh(self) -> tuple[dict[str, float], float]:
        """Read every known key's window and pause (and the global window) from Redis, then :meth:`blocked`.
        While Redis is unreachable it answers from what it knows, and tries again after ``retry_after``."""
        wall, mono = self._now()
        self._sweep(mono)
        if self._down_until <= mono and (self._seen or self._settings.global_limit is not None):
            names = list(self._seen)
            keys: list[str] = []
            args: list[str | int] = [_fmt(wall), int(self._settings.global_limit is not None)]
            for name in names:
                limit, window = self._settings.for_key(name)
                keys += [self.window_key(name), self.pause_key(name)]
                args += [limit, _fmt(window)]
            if self._settings.global_limit is not None:
                keys.append(self.global_key)
                args += [self._settings.global_limit[0], _fmt(self._settings.global_limit[1])]
            try:
                async with asyncio.timeout(self._timeout):
                    answer = await self._peek(keys=keys, args=args)
            except _STORE_ERRORS as exc:
                self._failed("peek", exc)
            else:
                self._reached()
                for i, name in enumerate(names):
                    used, at, paused = answer[3 * i: 3 * i + 3]
                    seen = self._state(name)
                    seen.used = int(used)
                    seen.heard(float(at) - wall + mono, mono)
                    seen.paused = float(paused) - wall + mono if paused not in ("", b"") else -math.inf
                if self._settings.global_limit is not None:
                    gused, gat = answer[-2:]
                    self._global_used, self._global_at = int(gused), float(gat) - wall + mono
                    self._global_stale = self._global_at > mono
        return self._blocked(nudge=False)
