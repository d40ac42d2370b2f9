"""The rate budget's settings and the seam the dispatcher paces sends through.

:class:`RateLimit` holds the limits (a default per routing-key *name*, per-key overrides, an
optional global limit), checked when built. :class:`Budget` is the seam the dispatcher uses:
the reads stay synchronous, and the four steps that may need a shared store —
:meth:`~Budget.refresh`, :meth:`~Budget.acquire`, :meth:`~Budget.confirm`, :meth:`~Budget.pause` —
are coroutines. :class:`receiver.limiter.RateLimiter` answers them at once from its own window
(the default); :class:`receiver.sharedlimit.SharedRateLimiter` keeps the window in Redis for
every replica. Both are importable from :mod:`receiver.limiter` too.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

__all__ = ["Budget", "RateLimit"]


def _check_limit(what: str, value: object) -> tuple[int, float]:
    if not isinstance(value, tuple) or len(value) != 2:
        raise ValueError(f"{what} must be a pair (events, window_seconds), got {value!r}")
    events, window = value
    _check_events(f"{what} events", events)
    _check_window(f"{what} window_seconds", window)
    return int(events), float(window)


def _check_events(what: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")


def _check_window(what: str, value: object) -> None:
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value) or value <= 0):
        raise ValueError(f"{what} must be a positive number of seconds, got {value!r}")


@dataclass(frozen=True)
class RateLimit:
    """Rate-limit settings: a default per routing key, per-key overrides, an optional global limit."""

    per_key: int = 120
    window_seconds: float = 60.0
    overrides: Mapping[str, tuple[int, float]] = field(default_factory=dict)
    global_limit: tuple[int, float] | None = None

    def __post_init__(self) -> None:
        _check_events("rate_limit.per_key", self.per_key)
        _check_window("rate_limit.window_seconds", self.window_seconds)
        if not isinstance(self.overrides, Mapping):
            raise ValueError(f"rate_limit.overrides must be a mapping, got {self.overrides!r}")
        checked = {str(k): _check_limit(f"rate_limit.overrides[{k!r}]", v) for k, v in self.overrides.items()}
        object.__setattr__(self, "overrides", MappingProxyType(checked))
        object.__setattr__(self, "window_seconds", float(self.window_seconds))
        if self.global_limit is not None:
            object.__setattr__(self, "global_limit", _check_limit("rate_limit.global_limit", self.global_limit))

    @property
    def longest_window(self) -> float:
        """The longest window any limit looks back over: how long send times matter."""
        windows = [self.window_seconds, *(w for _, w in self.overrides.values())]
        if self.global_limit is not None:
            windows.append(self.global_limit[1])
        return max(windows)

    def for_key(self, key: str) -> tuple[int, float]:
        """The (events, window_seconds) limit that applies to ``key``."""
        return self.overrides.get(key, (self.per_key, self.window_seconds))


class Budget(Protocol):
    """Where the sliding window lives: this process (:class:`RateLimiter`) or Redis, for every replica
    (:class:`receiver.sharedlimit.SharedRateLimiter`). Times are on the caller's monotonic clock."""

    @property
    def settings(self) -> RateLimit: ...

    def next_allowed(self, key: str) -> float:
        """When ``key`` may send (now if it may), as far as this process knows."""
        ...

    def blocked(self) -> tuple[dict[str, float], float]:
        """Keys without room and when each has room again; when the global limit has room. Also, once, a key
        :meth:`refresh` listed whose room has come since, with that time (past: look again at once)."""
        ...

    def waited(self, key: str, ready: float) -> float:
        """How long a send for ``key`` ready at ``ready`` has waited for room."""
        ...

    def seed(self, sends: Iterable[tuple[str, float]]) -> int:
        """Count earlier sends ``(key, seconds ago)`` kept by the outbox; returns how many count."""
        ...

    def budget(self, key: str) -> tuple[int, int, float, float]:
        """``(used, limit, window_seconds, next_send_in)`` of ``key``, for /status."""
        ...

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready view of every key's window (and the global one)."""
        ...

    async def refresh(self) -> tuple[dict[str, float], float]:
        """The keys without room now (what a claim leaves out), and when the global limit has room, after
        bringing the view up to date with the store."""
        ...

    async def acquire(self, key: str) -> float | None:
        """Record a send for ``key`` if there is room now: the time recorded, else ``None``."""
        ...

    async def confirm(self, key: str, taken_at: float, done_at: float) -> None:
        """The send recorded at ``taken_at`` got its answer at ``done_at``: count it from then."""
        ...

    async def pause(self, key: str, seconds: float) -> None:
        """No send for ``key`` for ``seconds`` (after a 429); a longer pause in force is kept."""
        ...
