"""How long an idle dispatcher waits before it looks at the queue again (fake clocks, a real SQLite outbox).

The wait is bounded by ``MAX_IDLE_WAIT``, so an event another process queued (``pdrelay outbox replay``,
which cannot call ``wake``) is sent within it; and a limit with room must not turn the wait into a busy
loop of ``_MIN_WAIT`` steps."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from receiver.breaker import CircuitBreaker
from receiver.dispatcher import MAX_IDLE_WAIT, Dispatcher
from receiver.errors import Reason
from receiver.limiter import RateLimit, RateLimiter
from receiver.metrics import Metrics
from receiver.outbox.sqlite import SQLiteOutbox
from receiver.pagerduty.events import SendResult
from receiver.secret import Secret
from receiver.settings import PagerDutySettings
from tests.fakes import FakeClock, FakeSender
from tests.receiver.test_outbox_sqlite import ev

KEYS = {"default": Secret("k" * 32)}


class TickingClock(FakeClock):
    """A fake clock whose monotonic time moves on by a microsecond at every reading, as a real one does."""

    def monotonic(self) -> float:
        self.advance(1e-6)
        return super().monotonic()


async def dispatcher_on(outbox: SQLiteOutbox, clock: FakeClock, rate_limit: RateLimit,
                        limiter: RateLimiter | None = None) -> AsyncIterator[Dispatcher]:
    """One dispatcher on the opened ``outbox``, closed after."""
    await outbox.open()
    settings = PagerDutySettings(routing_keys=KEYS, rate_limit=rate_limit)
    try:
        yield Dispatcher(outbox, FakeSender(lambda body: SendResult(ok=True, status=202)), KEYS, settings,
                         metrics=Metrics(CollectorRegistry()), clock=clock, log=logging.getLogger("test"),
                         limiter=limiter or RateLimiter(settings.rate_limit, clock),
                         breaker=CircuitBreaker(3, 60, clock=clock))
    finally:
        await outbox.close()


def test_the_longest_idle_wait_is_a_second() -> None:
    assert MAX_IDLE_WAIT == 1.0


@pytest.mark.parametrize("rate_limit", [RateLimit(), RateLimit(global_limit=(100, 60.0))],
                         ids=["per-key", "global"])
async def test_an_empty_outbox_is_looked_at_once_a_second(tmp_path: Path, rate_limit: RateLimit) -> None:
    """Nothing queued and every limit with room: the wait is MAX_IDLE_WAIT, not the 1 ms floor of a busy loop."""
    clock = TickingClock()
    async for dispatcher in dispatcher_on(SQLiteOutbox(tmp_path / "o.db", clock=clock), clock, rate_limit):
        assert await dispatcher.idle_wait(0.001) == MAX_IDLE_WAIT


async def test_an_item_due_sooner_shortens_the_wait(tmp_path: Path) -> None:
    """A queued item due in 0.25 s is waited for, no longer; one due in an hour still waits only a second."""
    clock = FakeClock()
    box = SQLiteOutbox(tmp_path / "o.db", clock=clock)
    async for dispatcher in dispatcher_on(box, clock, RateLimit()):
        await box.enqueue(b"{}", [ev("a")], [], resend_interval=3600.0)
        (item,) = await box.claim(1, ())
        await box.retry_later(item, clock.now() + 3600.0, Reason.SERVER_ERROR, 500, "later")
        assert await dispatcher.idle_wait() == MAX_IDLE_WAIT
        clock.advance(3600.0 - 0.25)
        assert await dispatcher.idle_wait() == pytest.approx(0.25)


class SlowToReadOutbox(SQLiteOutbox):
    """An outbox during whose :meth:`next_due` the clock moves on by ``reading`` seconds."""

    def __init__(self, path: Path, clock: FakeClock) -> None:
        super().__init__(path, clock=clock)
        self.fake_clock = clock
        self.reading = 0.0

    async def next_due(self) -> float | None:
        due = await super().next_due()
        self.fake_clock.advance(self.reading)
        return due


async def test_a_key_whose_room_comes_while_the_queue_is_read_is_looked_at_at_once(tmp_path: Path) -> None:
    """A key the claim left out (no budget) gets room while the outbox is read: no wait, not MAX_IDLE_WAIT."""
    clock = FakeClock()
    rate_limit = RateLimit(per_key=1, window_seconds=60)
    limiter = RateLimiter(rate_limit, clock)
    box = SlowToReadOutbox(tmp_path / "o.db", clock)
    async for dispatcher in dispatcher_on(box, clock, rate_limit, limiter):
        assert await limiter.acquire("default") is not None
        blocked, _ = await limiter.refresh()  # what the claim left out
        assert list(blocked) == ["default"]
        # A first look: the limiter's one-time mention of a key listed by the claim is used up here.
        assert await dispatcher.idle_wait() == MAX_IDLE_WAIT
        clock.advance(59.5)
        box.reading = 1.0  # the room comes half-way through reading the queue
        assert await dispatcher.idle_wait() == 0.0
