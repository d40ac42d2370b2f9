"""The circuit breaker state machine, its coroutine API and its registry, on a fake clock."""

from __future__ import annotations

import asyncio
import logging

import pytest

from receiver.breaker import BreakerState, CircuitBreaker, CircuitOpenError
from receiver.errors import PdrelayError
from tests.fakes import FakeClock

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN
Transition = tuple[str, BreakerState, BreakerState]


class Boom(Exception):
    """A failure of the remote end."""


class Rejected(Exception):
    """An answer that says nothing about the remote end's health (like a 400 or 429)."""


def make(threshold: int = 3, timeout: float = 60.0, **kw: object) -> tuple[CircuitBreaker, FakeClock, list[Transition]]:
    clock = FakeClock()
    seen: list[Transition] = []
    breaker = CircuitBreaker(threshold, timeout, name="events.pagerduty.com", clock=clock,
                             listeners=[lambda *t: seen.append(t)], **kw)  # type: ignore[arg-type]
    return breaker, clock, seen


def trip(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.failure_threshold):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state is OPEN


def test_trips_after_exactly_threshold_consecutive_failures() -> None:
    """The circuit stays closed for threshold-1 failures and opens on the threshold-th."""
    breaker, clock, seen = make(threshold=3)
    for expected in (1, 2):
        assert breaker.allow()
        breaker.record_failure()
        assert (breaker.state, breaker.failures) == (CLOSED, expected)
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is OPEN
    assert breaker.opened_at == clock.monotonic()
    assert breaker.retry_at() == clock.monotonic() + 60.0
    assert not breaker.allow()
    assert seen == [("events.pagerduty.com", CLOSED, OPEN)]


def test_success_in_closed_resets_the_count() -> None:
    """A success between failures starts the consecutive count again."""
    breaker, _, seen = make(threshold=3)
    for outcome in ("f", "f", "s", "f", "f"):
        assert breaker.allow()
        if outcome == "f":
            breaker.record_failure()
        else:
            breaker.record_success()
    assert (breaker.state, breaker.failures) == (CLOSED, 2)
    breaker.record_failure()
    assert breaker.state is OPEN
    assert seen == [("events.pagerduty.com", CLOSED, OPEN)]


async def test_non_failure_exceptions_neither_trip_nor_reset() -> None:
    """An exception the predicate rejects propagates and leaves the consecutive count alone."""
    breaker, _, _ = make(threshold=2, is_failure=lambda exc: not isinstance(exc, Rejected))

    @breaker
    async def call(exc: Exception) -> None:
        raise exc

    with pytest.raises(Boom):
        await call(Boom())
    for _ in range(3):
        with pytest.raises(Rejected):
            await call(Rejected())
        assert (breaker.state, breaker.failures) == (CLOSED, 1)
    with pytest.raises(Boom):
        await call(Boom())
    assert breaker.state is OPEN


async def test_open_refuses_with_the_time_of_the_next_trial() -> None:
    """An open circuit raises CircuitOpenError naming the circuit and the seconds left, without running the body."""
    breaker, clock, _ = make(threshold=1, timeout=60)
    trip(breaker)
    clock.advance(18)
    ran = False
    with pytest.raises(CircuitOpenError) as info:
        async with breaker:
            ran = True
    assert str(info.value) == "circuit 'events.pagerduty.com' is open; next trial in 42.0 s"
    assert (info.value.name, info.value.retry_in) == ("events.pagerduty.com", 42.0)
    assert isinstance(info.value, PdrelayError)
    assert not ran


def test_half_open_only_after_the_recovery_timeout() -> None:
    """The circuit refuses until exactly recovery_timeout has passed, then admits one trial."""
    breaker, clock, _ = make(threshold=1, timeout=60)
    trip(breaker)
    clock.advance(59)
    assert not breaker.allow()
    assert breaker.retry_in() == 1.0
    clock.advance(1)
    assert breaker.state is HALF_OPEN
    assert breaker.retry_at() is None
    assert breaker.allow()
    assert not breaker.allow()
    assert not breaker.allow()


async def test_half_open_lets_exactly_one_concurrent_trial_through() -> None:
    """While the trial call runs, a second caller is refused; the trial's success closes the circuit."""
    breaker, clock, _ = make(threshold=1, timeout=60)
    trip(breaker)
    clock.advance(60)
    gate = asyncio.Event()
    calls = 0

    @breaker
    async def send() -> str:
        nonlocal calls
        calls += 1
        await gate.wait()
        return "ok"

    trial = asyncio.create_task(send())
    await asyncio.sleep(0)
    assert calls == 1
    with pytest.raises(CircuitOpenError) as info:
        await send()
    assert str(info.value) == "circuit 'events.pagerduty.com' is half-open; a trial call is in flight"
    assert info.value.trial_in_flight
    assert calls == 1
    gate.set()
    assert await trial == "ok"
    assert breaker.state is CLOSED
    assert breaker.opened_at is None
    assert breaker.allow() and breaker.allow()


def test_trial_failure_reopens_with_a_fresh_timer() -> None:
    """A failed trial opens the circuit again and the recovery timeout restarts from that moment."""
    breaker, clock, _ = make(threshold=1, timeout=60)
    trip(breaker)
    clock.advance(100)
    assert breaker.allow()
    clock.advance(5)
    breaker.record_failure()
    assert breaker.state is OPEN
    assert breaker.opened_at == clock.monotonic()
    assert breaker.retry_at() == clock.monotonic() + 60
    clock.advance(59)
    assert not breaker.allow()
    clock.advance(1)
    assert breaker.allow()


def test_listeners_get_every_transition_in_order() -> None:
    """Listeners see closed→open→half_open→open→half_open→closed, in that order."""
    breaker, clock, seen = make(threshold=2, timeout=10)
    second: list[Transition] = []
    breaker.add_listener(lambda *t: second.append(t))
    trip(breaker)
    clock.advance(10)
    assert breaker.allow()
    breaker.record_failure()
    clock.advance(10)
    assert breaker.allow()
    breaker.record_success()
    name = "events.pagerduty.com"
    expected = [(name, CLOSED, OPEN), (name, OPEN, HALF_OPEN), (name, HALF_OPEN, OPEN),
                (name, OPEN, HALF_OPEN), (name, HALF_OPEN, CLOSED)]
    assert seen == expected
    assert second == expected


def test_a_failing_listener_is_logged_and_the_others_still_run(caplog: pytest.LogCaptureFixture) -> None:
    """An exception in one listener does not stop the transition or the other listeners."""
    seen: list[Transition] = []

    def broken(name: str, old: BreakerState, new: BreakerState) -> None:
        raise RuntimeError("metrics down")

    breaker = CircuitBreaker(1, 60, name="events.pagerduty.com", clock=FakeClock(),
                             listeners=[broken, lambda *t: seen.append(t)])
    with caplog.at_level(logging.ERROR, logger="receiver.breaker"):
        trip(breaker)
    assert seen == [("events.pagerduty.com", CLOSED, OPEN)]
    assert "listener" in caplog.text and "metrics down" in caplog.text


def test_async_listeners_are_refused() -> None:
    """A coroutine function cannot be a listener, since nobody would await it."""
    breaker, _, _ = make()

    async def listener(name: str, old: BreakerState, new: BreakerState) -> None:
        return None

    with pytest.raises(TypeError, match="must be synchronous"):
        breaker.add_listener(listener)  # type: ignore[arg-type]


async def test_decorator_counts_failures_and_passes_results_through() -> None:
    """The decorated coroutine returns its value, re-raises its exceptions and trips the breaker."""
    clock = FakeClock()

    @CircuitBreaker(failure_threshold=2, recovery_timeout=30, clock=clock)
    async def fetch(x: int, *, fail: bool = False) -> int:
        if fail:
            raise Boom("down")
        return x * 2

    assert fetch.__name__ == "fetch"
    assert await fetch(21) == 42
    for _ in range(2):
        with pytest.raises(Boom, match="down"):
            await fetch(1, fail=True)
    with pytest.raises(CircuitOpenError, match=r"^circuit '.*fetch' is open; next trial in 30\.0 s$"):
        await fetch(1)


async def test_context_manager_counts_failures_and_successes() -> None:
    """`async with breaker` records a normal exit as success and a failing exception as failure."""
    breaker, clock, _ = make(threshold=2, timeout=60)
    with pytest.raises(Boom):
        async with breaker:
            raise Boom
    async with breaker as same:
        assert same is breaker
    assert breaker.failures == 0
    for _ in range(2):
        with pytest.raises(Boom):
            async with breaker:
                raise Boom
    assert breaker.state is OPEN
    clock.advance(60)
    async with breaker:
        assert not breaker.allow()
    assert breaker.state is CLOSED


async def test_a_call_admitted_before_the_circuit_opened_cannot_close_it() -> None:
    """A slow call from the closed period finishing during the half-open trial is ignored."""
    breaker, clock, _ = make(threshold=1, timeout=60)
    slow_gate, trial_gate = asyncio.Event(), asyncio.Event()

    async def slow() -> None:
        async with breaker:
            await slow_gate.wait()

    slow_task = asyncio.create_task(slow())
    await asyncio.sleep(0)
    assert breaker.allow()
    breaker.record_failure()
    clock.advance(60)

    async def trial() -> None:
        async with breaker:
            await trial_gate.wait()
            raise Boom

    trial_task = asyncio.create_task(trial())
    await asyncio.sleep(0)
    slow_gate.set()
    await slow_task
    assert breaker.state is HALF_OPEN
    assert not breaker.allow()
    trial_gate.set()
    with pytest.raises(Boom):
        await trial_task
    assert breaker.state is OPEN


async def test_an_ignored_or_cancelled_trial_frees_the_trial_slot() -> None:
    """A trial that ends without a verdict leaves the circuit half-open for the next caller."""
    breaker, clock, seen = make(threshold=1, timeout=60, is_failure=lambda exc: not isinstance(exc, Rejected))
    trip(breaker)
    clock.advance(60)
    with pytest.raises(Rejected):
        async with breaker:
            raise Rejected
    assert breaker.state is HALF_OPEN

    async def hang() -> None:
        async with breaker:
            await asyncio.Event().wait()

    task = asyncio.create_task(hang())
    await asyncio.sleep(0)
    assert not breaker.allow()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.allow()
    breaker.record_ignored()
    assert breaker.allow()
    breaker.record_success()
    assert [t[1:] for t in seen] == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]


def test_snapshot_reports_state_for_status() -> None:
    """The snapshot is a small dict with the state, the count and the seconds to the next trial."""
    breaker, clock, _ = make(threshold=2, timeout=60)
    assert breaker.snapshot() == {"name": "events.pagerduty.com", "state": "closed", "failures": 0,
                                  "failure_threshold": 2, "recovery_timeout": 60.0, "retry_in": None,
                                  "trial_in_flight": False}
    trip(breaker)
    clock.advance(15)
    assert breaker.snapshot()["state"] == "open"
    assert breaker.snapshot()["retry_in"] == 45.0
    clock.advance(45)
    assert breaker.allow()
    assert breaker.snapshot()["state"] == "half_open"
    assert breaker.snapshot()["trial_in_flight"] is True


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"failure_threshold": 0}, "failure_threshold must be an integer >= 1, got 0"),
    ({"failure_threshold": 2.5}, "failure_threshold must be an integer >= 1, got 2.5"),
    ({"failure_threshold": True}, "failure_threshold must be an integer >= 1, got True"),
    ({"recovery_timeout": 0}, "recovery_timeout must be a finite number of seconds > 0, got 0"),
    ({"recovery_timeout": -1.0}, "recovery_timeout must be a finite number of seconds > 0, got -1.0"),
    ({"recovery_timeout": float("nan")}, "recovery_timeout must be a finite number of seconds > 0, got nan"),
    ({"recovery_timeout": float("inf")}, "recovery_timeout must be a finite number of seconds > 0, got inf"),
])
def test_invalid_arguments_are_refused_with_a_clear_message(kwargs: dict[str, float], message: str) -> None:
    """A threshold below 1 or a non-positive recovery timeout raises ValueError naming the argument."""
    with pytest.raises(ValueError) as info:
        CircuitBreaker(**kwargs)  # type: ignore[arg-type]
    assert str(info.value) == message
