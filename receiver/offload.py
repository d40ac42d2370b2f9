"""The worker thread beside the event loop that parses large bodies and runs the rules over them.

msgspec and the rules hold the interpreter while they run: on the event loop, a 10,000-alert
body would stop every other request (``/healthz`` included) for the second it takes. In one
thread, the event loop still gets the interpreter every few milliseconds (Python's switch
interval). One thread, not a pool: one body at a time, so that the event loop competes with
one thread only and only one body's rule output is being built at any moment.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

__all__ = ["OFFLOAD_BYTES", "Worker"]

OFFLOAD_BYTES = 64 * 1024
"""Bodies from this size on go to the thread. Below it (a few dozen alerts, under a millisecond
of rules) the hop to the thread and back would cost more than it frees."""

_T = TypeVar("_T")


class Worker:
    """Runs the work of large bodies in its thread, the rest on the event loop. The thread starts on
    first use and stops at :meth:`close`."""

    __slots__ = ("_executor", "threshold")

    def __init__(self, threshold: int = OFFLOAD_BYTES) -> None:
        self.threshold = threshold
        self._executor: ThreadPoolExecutor | None = None

    async def run(self, size: int, work: Callable[[], _T]) -> _T:
        """``work()`` for a body of ``size`` bytes: in the thread from :attr:`threshold` on, else right here."""
        if size < self.threshold:
            return work()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pdrelay-intake")
        return await asyncio.get_running_loop().run_in_executor(self._executor, work)

    def close(self) -> None:
        """Let the body in progress, if any, finish, and stop the thread."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
