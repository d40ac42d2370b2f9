"""Fakes for unit tests: a clock that only moves when told, a sender that is a function."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from receiver.pagerduty.events import SendResult
from receiver.secret import Secret


class FakeClock:
    """Wall and monotonic time that advance only through :meth:`advance`."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._mono = 1000.0

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._now += seconds
        self._mono += seconds


class FakeSender:
    """A Sender made from a function; records (routing key, body) of every call."""

    def __init__(self, answer: Callable[[Mapping[str, Any]], Awaitable[SendResult] | SendResult]) -> None:
        self._answer = answer
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def send(self, routing_key: Secret, body: Mapping[str, Any]) -> SendResult:
        self.calls.append((routing_key.reveal(), dict(body)))
        result = self._answer(body)
        if isinstance(result, SendResult):
            return result
        return await result

    async def aclose(self) -> None:
        return None
