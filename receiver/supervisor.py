"""Keeps a background task alive: the dispatcher must never stop silently.

:class:`Supervisor` runs a task's coroutine; when it raises an exception nobody expected,
the exception is logged with its traceback, counted (``on_restart``), and the coroutine is
started again after a capped exponential backoff (1 s, 2 s, 4 s … up to a minute). The task
calls the ``clean`` callback it is given after each pass that went well; after
``unready_after`` failures in a row without one, :attr:`Supervisor.problem` names the error
(``/readyz`` answers 503 with it) until the task passes cleanly again.

An unavailable outbox (:class:`~receiver.errors.OutboxUnavailable`: Redis unreachable, SQLite's
file not writable) is not a crash: the task *pauses*. It is neither counted as a restart nor
logged with a traceback; the log says once that it paused and once that it resumed (at the
next clean pass), and the task is tried again after a short capped backoff (0.25 s, 0.5 s …
up to 2 s), so it resumes within two seconds of the outbox coming back. An outage leaves the
streak of failures as it was: ``/readyz`` reports the outbox itself, from its own check.

Cancellation is never caught: at shutdown the task stops as it always did, including
during a backoff.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from receiver.errors import OutboxUnavailable

__all__ = ["Supervisor", "describe", "until_available"]

Sleep = Callable[[float], Awaitable[None]]
T = TypeVar("T")
_MESSAGE_CAP = 200  # characters of an exception's message in /readyz


def describe(exc: BaseException) -> str:
    """``"<error class>: <message>"``, the message cut to 200 characters (what ``/readyz`` shows)."""
    message = str(exc)
    if len(message) > _MESSAGE_CAP:
        message = message[:_MESSAGE_CAP] + "…"
    return f"{type(exc).__name__}: {message}"


async def until_available(op: Callable[[], Awaitable[T]], on_unavailable: Callable[[], None],
                          sleep: Sleep = asyncio.sleep) -> T:
    """Run ``op`` until it does not raise :class:`OutboxUnavailable`, trying again after 0.1 s, 0.2 s … up to 2 s
    (``on_unavailable`` is called at each failure). For a settle after a send: the send happened, and an item
    left unsettled would be sent a second time."""
    delay = 0.1
    while True:
        try:
            return await op()
        except OutboxUnavailable:
            on_unavailable()
            await sleep(delay)
            delay = min(2.0, delay * 2)


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
        pause_backoff: float = 0.25,
        max_pause_backoff: float = 2.0,
        on_stop: Callable[[], None] = lambda: None,
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
        self._pause_initial = pause_backoff
        self._pause_max = max_pause_backoff
        self._pauses = 0  # attempts in a row that found the outbox unavailable
        self._stopping = False
        self._on_stop = on_stop

    @property
    def paused(self) -> bool:
        """The task is waiting for the outbox to be available again."""
        return self._pauses > 0

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
        if self._pauses:
            self._log.warning(f"the outbox is available again; the {self.name} resumes",
                              extra={"task": self.name, "attempts": self._pauses})
            self._pauses = 0

    def backoff(self, failures: int) -> float:
        """Seconds before restart number ``failures`` (1-based) of a streak: doubling, capped."""
        return float(min(self._max, self._initial * 2.0 ** (failures - 1)))

    def stop(self) -> None:
        """At shutdown, before the cancellation: the task is not restarted, and ``on_stop`` tells it to end."""
        self._stopping = True
        self._on_stop()

    async def run(self) -> None:
        """Run the task; restart it after each failure; return when it returns (it should not, unless stopped)."""
        while not self._stopping:
            try:
                await self._run(self._clean)
            except OutboxUnavailable as exc:
                await self._pause(exc)
                continue
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
            if not self._stopping:
                self._log.warning(f"the {self.name} stopped", extra={"task": self.name})
            return

    async def _pause(self, exc: OutboxUnavailable) -> None:
        """Wait before trying the task again on an unavailable outbox: no traceback, no restart counted."""
        self._pauses += 1
        delay = float(min(self._pause_max, self._pause_initial * 2.0 ** (self._pauses - 1)))
        if self._pauses == 1:
            self._log.warning(
                f"the outbox is unavailable; the {self.name} pauses and tries again by itself",
                extra={"task": self.name, "error": describe(exc), "retry_in": delay},
            )
        await self._sleep(delay)
