"""Keeps a background task alive: the dispatcher must never stop silently.

:class:`Supervisor` runs a task's coroutine; when it raises an exception nobody expected,
the exception is logged with its traceback, counted (``on_restart``), and the coroutine is
started again after a capped exponential backoff (1 s, 2 s, 4 s … up to a minute). The task
calls the ``clean`` callback it is given after each pass that went well; after
``unready_after`` failures in a row without one, :attr:`Supervisor.problem` names the error
(``/readyz`` answers 503 with it) until the task passes cleanly again.

Cancellation is never caught: at shutdown the task stops as it always did, including
during a backoff.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

__all__ = ["Supervisor", "describe"]

Sleep = Callable[[float], Awaitable[None]]
_MESSAGE_CAP = 200  # characters of an exception's message in /readyz


def describe(exc: BaseException) -> str:
    """``"<error class>: <message>"``, the message cut to 200 characters (what ``/readyz`` shows)."""
    message = str(exc)
    if len(message) > _MESSAGE_CAP:
        message = message[:_MESSAGE_CAP] + "…"
    return f"{type(exc).__name__}: {message}"


class Supervisor:
    """Runs ``run(clean)`` until cancelled, restarting it after each unexpected exception."""

    def __init__(
        self,
        name: str,
        run: Callable[[Callable[[], None]], Awaitable[None]],
        *,
        log: logging.Logger,
        on_restart: Callable[[], None] = lambda: None,
        sleep: Sleep = asyncio.sleep,
        initial_backoff: float = 1.0,
        max_backoff: float = 60.0,
        unready_after: int = 3,
    ) -> None:
        self.name = name
        self._run = run
        self._log = log
        self._on_restart = on_restart
        self._sleep = sleep
        self._initial = initial_backoff
        self._max = max_backoff
        self._unready_after = unready_after
        self._failures = 0  # in a row, without a clean pass between
        self._last: BaseException | None = None

    @property
    def failures(self) -> int:
        """Failures in a row since the last clean pass."""
        return self._failures

    @property
    def problem(self) -> str | None:
        """Why the task is not healthy (it keeps failing), or ``None``."""
        if self._last is None or self._failures < self._unready_after:
            return None
        return describe(self._last)

    def _clean(self) -> None:
        self._failures = 0
        self._last = None

    def backoff(self, failures: int) -> float:
        """Seconds before restart number ``failures`` (1-based) of a streak: doubling, capped."""
        return float(min(self._max, self._initial * 2.0 ** (failures - 1)))

    async def run(self) -> None:
        """Run the task; restart it after each failure; return when it returns (it should not)."""
        while True:
            try:
                await self._run(self._clean)
            except Exception as exc:  # the point: nothing may end the task silently
                self._failures += 1
                self._last = exc
                delay = self.backoff(self._failures)
                self._on_restart()
                self._log.error(
                    f"the {self.name} failed with an unexpected error; restarting it",
                    exc_info=exc,
                    extra={"task": self.name, "error": describe(exc), "failures": self._failures,
                           "restart_in": delay},
                )
                await self._sleep(delay)
                continue
            self._log.warning(f"the {self.name} stopped", extra={"task": self.name})
            return
