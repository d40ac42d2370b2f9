"""When the REST API client tries a call again, and how long it waits first.

A call is retried on 408, 429, 5xx and on no answer at all, never on another status. Each wait
is PagerDuty's own hint when it gave one (``ratelimit-reset`` on REST 429s, else
``Retry-After``, in seconds) or exponential backoff, plus jitter so that clients that failed
together do not come back together. The policy is bounded twice: at most ``max_attempts``
calls, and no wait that would end past ``max_elapsed`` seconds after the first call started
(the client then gives up at once rather than sleep for nothing).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["RetryPolicy", "server_hint"]


def server_hint(headers: Mapping[str, str]) -> float | None:
    """Seconds PagerDuty asked us to wait: ``ratelimit-reset``, else ``Retry-After`` (numeric form only)."""
    for name in ("ratelimit-reset", "retry-after"):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            value = float(raw.strip())
        except ValueError:
            continue  # an HTTP-date Retry-After, or garbage: fall back to backoff
        if math.isfinite(value) and value >= 0:
            return value
    return None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounds and shape of the retries; the defaults give up within about a minute."""

    max_attempts: int = 4
    max_elapsed: float = 60.0
    base_delay: float = 1.0
    max_delay: float = 30.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ValueError(f"max_attempts must be an integer >= 1, got {self.max_attempts!r}")
        for name in ("max_elapsed", "base_delay", "max_delay"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value < math.inf:
                raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
        if not isinstance(self.jitter, int | float) or not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be a fraction between 0 and 1, got {self.jitter!r}")

    @staticmethod
    def retries_status(status: int) -> bool:
        return status in (408, 429) or status >= 500

    def delay(self, attempt: int, hint: float | None, rand: float) -> float:
        """Seconds to wait after failed call number ``attempt`` (1-based); ``rand`` is uniform in [0, 1).

        A server hint is waited in full, plus up to ``jitter`` of it; backoff is
        ``base_delay * 2**(attempt-1)`` capped at ``max_delay``, minus up to ``jitter`` of it."""
        if hint is not None:
            return hint * (1 + self.jitter * rand)
        backoff: float = min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1))
        return backoff * (1 - self.jitter * rand)
