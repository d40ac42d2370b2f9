"""Admission to intake: how many requests, and how many bytes of bodies, intake handles at once.

Intake holds an admitted body in memory while it parses it, runs the rules and waits for the
outbox to commit the events: at the peak up to 18 times the body's size (a 9.5 MiB body of
10,000 alerts with 48 labels each: +174 MiB of RSS; figures in ``tests/bench/bench_memory.py``).
The gate keeps that bounded, whatever clients send:

- at most ``server.max_concurrent_intake`` requests at once;
- at most ``server.body_limit`` bytes of bodies at once, by their ``Content-Length``: one
  full-size notification, or as many smaller ones as add up to it. A body of unknown length
  (chunked) counts as ``body_limit``.

A request that does not fit is refused at once, before its body is read (intake answers 503
with ``Retry-After``; Alertmanager retries): waiting for room would hold its connection and
buffers instead. Small notifications, the usual case, never come near the byte bound.
"""

from __future__ import annotations

from types import TracebackType

from receiver.errors import PdrelayError

__all__ = ["IntakeBusy", "IntakeGate", "Reservation"]


class IntakeBusy(PdrelayError):
    """Intake has no room for one more request now; the message says which bound is reached."""


class Reservation:
    """One admitted request's share of the gate, given back on leaving the ``with`` block."""

    __slots__ = ("_gate", "size")

    def __init__(self, gate: IntakeGate, size: int) -> None:
        self._gate = gate
        self.size = size

    def __enter__(self) -> Reservation:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._gate.release(self)


class IntakeGate:
    """Counts the requests and body bytes in intake; refuses what would go over either bound."""

    __slots__ = ("bytes", "max_bytes", "max_requests", "requests")

    def __init__(self, max_requests: int, max_bytes: int) -> None:
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.requests = 0  # admitted and not yet answered
        self.bytes = 0  # their declared body sizes

    def reserve(self, declared: int | None) -> Reservation:
        """Admit a request whose body is ``declared`` bytes (None: unknown), or raise :class:`IntakeBusy`.

        A body declared over ``max_bytes`` is the caller's to refuse first (413); here it counts as
        ``max_bytes``.
        """
        size = self.max_bytes if declared is None else min(declared, self.max_bytes)
        if self.requests >= self.max_requests:
            raise IntakeBusy(f"intake is busy: {self.requests} requests in progress "
                             "(server.max_concurrent_intake); retry later")
        if self.bytes + size > self.max_bytes:
            raise IntakeBusy(f"intake is busy: {self.bytes} bytes of bodies in progress, no room for {size} more "
                             "(server.body_limit); retry later")
        self.requests += 1
        self.bytes += size
        return Reservation(self, size)

    def release(self, reservation: Reservation) -> None:
        self.requests -= 1
        self.bytes -= reservation.size
