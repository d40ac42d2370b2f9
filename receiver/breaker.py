"""Circuit breakers: stop calling an endpoint that keeps failing, and probe it with one trial call.

A :class:`CircuitBreaker` is a pure state machine on an injected monotonic clock::

    closed ──failure_threshold consecutive failures──▶ open
    open ──recovery_timeout seconds pass──▶ half_open      (checked lazily, on the next use)
    half_open ──the single trial call succeeds──▶ closed
    half_open ──the single trial call fails──▶ open        (the recovery timer starts again)

In ``closed`` a success resets the consecutive-failure count. In ``half_open`` exactly one
caller is let through; everybody else is refused until that trial reports.

Outcomes come in three kinds:

* success: resets the count (closed) or closes the circuit (the half-open trial);
* failure: counts towards tripping (closed) or re-opens the circuit (the half-open trial);
* ignored: neither. It does not trip and does not reset the count, and it frees the
  half-open trial slot so the next caller becomes the trial. Use it for answers that say
  nothing about the endpoint's health (pdrelay: 400 and 429) and for cancelled calls.

Outcomes reported while the circuit is open, and (through the decorator and the context
manager) outcomes of calls admitted before the latest state change, are ignored: a slow
call started while closed cannot close a half-open circuit whose trial is still running.

Two ways to use it:

* Low level, no exceptions (pdrelay's dispatcher): ``if breaker.allow(): ...`` and then
  exactly one of :meth:`~CircuitBreaker.record_success`, :meth:`~CircuitBreaker.record_failure`
  or :meth:`~CircuitBreaker.record_ignored` for every call that ``allow()`` admitted;
  the caller's own predicate decides which (pdrelay: 5xx, timeouts and connection errors
  are failures). A half-open trial that never reports keeps the circuit half-open.
* For coroutines: ``@CircuitBreaker(failure_threshold=5, recovery_timeout=60)`` on an
  ``async def``, or ``async with breaker: ...``. A refused call raises
  :class:`CircuitOpenError` without running. An exception for which ``is_failure(exc)``
  is true (default: any ``Exception``) is a failure; any other exception propagates and is
  *ignored* (it neither trips nor resets). ``BaseException``\\s that are not ``Exception``
  (cancellation, ``KeyboardInterrupt``) are always ignored. Returning normally is a success.

State changes are reported to listeners ``fn(name, old_state, new_state)`` (synchronous,
called after the change; an exception in one is logged and does not stop the others).
pdrelay keeps one breaker for its PagerDuty events endpoint. Breakers are meant for one
event loop and are not thread-safe.
"""

from __future__ import annotations

import contextvars
import enum
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from receiver.clock import MonotonicClock, SystemClock
from receiver.errors import PdrelayError

__all__ = [
    "BreakerState",
    "CircuitBreaker",
    "CircuitOpenError",
    "Listener",
]

P = ParamSpec("P")
R = TypeVar("R")

log = logging.getLogger(__name__)


class BreakerState(enum.StrEnum):
    """Where a circuit breaker is (also the value reported to metrics and /status)."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"



Listener = Callable[[str, BreakerState, BreakerState], None]
"""``fn(name, old_state, new_state)``, called after every state change."""


class CircuitOpenError(PdrelayError):
    """The circuit refused a call: it is open, or half-open with its trial call in flight."""

    def __init__(self, name: str, retry_in: float, *, trial_in_flight: bool = False) -> None:
        if trial_in_flight:
            message = f"circuit {name!r} is half-open; a trial call is in flight"
        else:
            message = f"circuit {name!r} is open; next trial in {retry_in:.1f} s"
        super().__init__(message)
        self.name = name
        self.retry_in = retry_in
        self.trial_in_flight = trial_in_flight


@dataclass(frozen=True, slots=True)
class _Ticket:
    """An admitted call: the state generation it was admitted in, and whether it is the trial."""

    generation: int
    trial: bool


# The tickets of the ``async with`` blocks the current task is inside, innermost last.
_ACTIVE: contextvars.ContextVar[tuple[tuple[CircuitBreaker, _Ticket], ...]] = contextvars.ContextVar(
    "pdrelay_breaker_active", default=()
)


def _any_exception(exc: Exception) -> bool:
    return True


def _validate(failure_threshold: int, recovery_timeout: float) -> None:
    if isinstance(failure_threshold, bool) or not isinstance(failure_threshold, int) or failure_threshold < 1:
        raise ValueError(f"failure_threshold must be an integer >= 1, got {failure_threshold!r}")
    if (isinstance(recovery_timeout, bool) or not isinstance(recovery_timeout, int | float)
            or not recovery_timeout > 0 or recovery_timeout == float("inf")):
        raise ValueError(f"recovery_timeout must be a finite number of seconds > 0, got {recovery_timeout!r}")


def _check_listener(fn: Listener) -> None:
    if not callable(fn):
        raise TypeError(f"a breaker listener must be callable, got {fn!r}")
    if inspect.iscoroutinefunction(fn):
        raise TypeError(f"a breaker listener must be synchronous, got coroutine function {fn!r}")


class CircuitBreaker:
    """One circuit: closed → open → half-open → closed, on an injected monotonic clock."""

    def __init__(
        self,
        failure_threshold: int = 5,
        recovery_timeout: float = 60.0,
        *,
        name: str | None = None,
        is_failure: Callable[[Exception], bool] = _any_exception,
        clock: MonotonicClock | None = None,
        listeners: Iterable[Listener] = (),
    ) -> None:
        """``name`` defaults to the qualified name of the first function decorated, else ``"circuit"``."""
        _validate(failure_threshold, recovery_timeout)
        self.failure_threshold = failure_threshold
        self.recovery_timeout = float(recovery_timeout)
        self._name = name if name is not None else "circuit"
        self._named = name is not None
        self._is_failure = is_failure
        self._clock: MonotonicClock = clock if clock is not None else SystemClock()
        self._listeners: list[Listener] = []
        for fn in listeners:
            self.add_listener(fn)
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_in_flight = False
        self._generation = 0

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self._name!r} {self._state}>"

    # -- observation -------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def state(self) -> BreakerState:
        """The current state; an open circuit whose timeout has passed becomes half-open here."""
        self._tick()
        return self._state

    @property
    def failures(self) -> int:
        """Consecutive failures counted in the closed state."""
        return self._failures

    @property
    def opened_at(self) -> float | None:
        """Monotonic time the circuit last opened; ``None`` while closed."""
        return self._opened_at

    def retry_at(self) -> float | None:
        """Monotonic time of the next trial while open; ``None`` otherwise."""
        if self.state is not BreakerState.OPEN or self._opened_at is None:
            return None
        return self._opened_at + self.recovery_timeout

    def retry_in(self) -> float | None:
        """Seconds until the next trial while open; ``None`` otherwise."""
        at = self.retry_at()
        return None if at is None else max(0.0, at - self._clock.monotonic())

    def snapshot(self) -> dict[str, Any]:
        """A small JSON-able dict for /status."""
        state = self.state
        return {
            "name": self._name,
            "state": str(state),
            "failures": self._failures,
            "failure_threshold": self.failure_threshold,
            "recovery_timeout": self.recovery_timeout,
            "retry_in": self.retry_in(),
            "trial_in_flight": state is BreakerState.HALF_OPEN and self._trial_in_flight,
        }

    def add_listener(self, fn: Listener) -> None:
        """Call ``fn(name, old_state, new_state)`` after every state change."""
        _check_listener(fn)
        self._listeners.append(fn)

    # -- low-level API -------------------------------------------------------------

    def allow(self) -> bool:
        """May the caller send now? In half-open this is true exactly once until the trial reports."""
        return self._admit() is not None

    def record_success(self) -> None:
        """The admitted call succeeded: reset the count, or close the circuit after a trial."""
        self._tick()
        if self._state is BreakerState.CLOSED:
            self._failures = 0
        elif self._state is BreakerState.HALF_OPEN and self._trial_in_flight:
            self._trial_in_flight = False
            self._failures = 0
            self._opened_at = None
            self._transition(BreakerState.CLOSED)

    def record_failure(self) -> None:
        """The admitted call failed: count it (and maybe trip), or re-open after a trial."""
        self._tick()
        if self._state is BreakerState.CLOSED:
            self._failures += 1
            if self._failures >= self.failure_threshold:
                self._open()
        elif self._state is BreakerState.HALF_OPEN and self._trial_in_flight:
            self._trial_in_flight = False
            self._open()

    def record_ignored(self) -> None:
        """The admitted call says nothing about health: no count change; a half-open trial slot is freed."""
        self._tick()
        if self._state is BreakerState.HALF_OPEN:
            self._trial_in_flight = False

    # -- coroutine API -------------------------------------------------------------

    def __call__(self, fn: Callable[P, Awaitable[R]]) -> Callable[P, Coroutine[Any, Any, R]]:
        """Decorate an ``async def`` so that every call goes through this breaker."""
        if not self._named:
            self._name = getattr(fn, "__qualname__", self._name)
            self._named = True

        @functools.wraps(fn)
        async def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            ticket = self._admit_or_raise()
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                self._settle(ticket, exc)
                raise
            self._settle(ticket, None)
            return result

        return guarded

    async def __aenter__(self) -> CircuitBreaker:
        ticket = self._admit_or_raise()
        _ACTIVE.set((*_ACTIVE.get(), (self, ticket)))
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        active = _ACTIVE.get()
        for i in range(len(active) - 1, -1, -1):
            if active[i][0] is self:
                ticket = active[i][1]
                _ACTIVE.set(active[:i] + active[i + 1:])
                self._settle(ticket, exc)
                return
        raise RuntimeError(f"circuit {self._name!r}: __aexit__ without a matching __aenter__ in this task")

    # -- internals -----------------------------------------------------------------

    def _tick(self) -> None:
        if (self._state is BreakerState.OPEN and self._opened_at is not None
                and self._clock.monotonic() >= self._opened_at + self.recovery_timeout):
            self._trial_in_flight = False
            self._transition(BreakerState.HALF_OPEN)

    def _open(self) -> None:
        self._opened_at = self._clock.monotonic()
        self._failures = 0
        self._transition(BreakerState.OPEN)

    def _transition(self, new: BreakerState) -> None:
        old, self._state = self._state, new
        self._generation += 1
        for fn in list(self._listeners):
            try:
                fn(self._name, old, new)
            except Exception:
                log.exception("circuit %r: listener %r failed on %s -> %s", self._name, fn, old, new)

    def _admit(self) -> _Ticket | None:
        self._tick()
        if self._state is BreakerState.CLOSED:
            return _Ticket(self._generation, trial=False)
        if self._state is BreakerState.HALF_OPEN and not self._trial_in_flight:
            self._trial_in_flight = True
            return _Ticket(self._generation, trial=True)
        return None

    def _admit_or_raise(self) -> _Ticket:
        ticket = self._admit()
        if ticket is not None:
            return ticket
        if self._state is BreakerState.HALF_OPEN:
            raise CircuitOpenError(self._name, 0.0, trial_in_flight=True)
        raise CircuitOpenError(self._name, self.retry_in() or 0.0)

    def _settle(self, ticket: _Ticket, exc: BaseException | None) -> None:
        self._tick()
        if ticket.generation != self._generation:
            return  # admitted before the latest state change: its outcome is stale
        if exc is None:
            self.record_success()
        elif isinstance(exc, Exception) and self._is_failure(exc):
            self.record_failure()
        else:
            self.record_ignored()
