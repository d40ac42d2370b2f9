"""Refused requests in the audit log by the interval, not one entry each: a flood cannot rotate real entries out.

An unauthenticated client can send thousands of requests a second, and one ``auth.refused``
entry each would push every other entry out of the rotated files within minutes.
:class:`RefusalAggregator` sits in front of a sink: other events pass through unchanged, and
``auth.refused`` entries are keyed by what they say (the actor and every field: group, status,
reason, method, remote):

* the first refusal of a key is written at once, with ``count`` 1 and ``first`` = ``last`` = its time;
* further refusals of a known key are counted, and at the end of the interval (``interval``
  seconds of the injected monotonic clock, from the first refusal) each key with a count is
  written as one entry: its fields, ``count``, and the times of the ``first`` and ``last``
  refusal counted; a key with none is forgotten, so its next refusal is written at once again;
* at most ``max_keys`` keys are known at a time (a client can vary its source address): the
  refusals of any other key are counted together and written at the end of the interval as one
  entry with ``overflow: true``, ``count``, ``first``, ``last`` and ``max_keys``, and nothing else.

So however fast refusals come, an interval writes at most ``2 * max_keys + 1`` of them. The end
of an interval is noticed at the next refusal and by a timer on the running event loop; what is
pending is written by :meth:`~RefusalAggregator.close`. Counters and logs per request are the
caller's business. For use on one thread (the event loop); put it in front of a
:class:`~receiver.audit.sinks.GuardedAudit`, as the service does.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from receiver.audit.entry import cap, timestamp
from receiver.audit.sinks import AuditSink
from receiver.clock import Clock

__all__ = ["REFUSED", "RefusalAggregator"]

REFUSED = "auth.refused"
"""The event aggregated."""

_Key = tuple[str | None, tuple[tuple[str, object], ...]]
_ADDED = frozenset({"count", "first", "last", "overflow", "max_keys"})  # the fields an aggregate adds


@dataclass(slots=True)
class _Tally:
    count: int = 0
    first: float = 0.0  # wall-clock times, written as RFC 3339
    last: float = 0.0

    def add(self, t: float) -> None:
        if not self.count:
            self.first = t
        self.count += 1
        self.last = t

    def times(self) -> dict[str, object]:
        return {"count": self.count, "first": timestamp(self.first), "last": timestamp(self.last)}


class RefusalAggregator:
    """An :class:`~receiver.audit.sinks.AuditSink` that writes ``auth.refused`` entries by the interval."""

    def __init__(self, sink: AuditSink, clock: Clock, *, interval: float = 10.0, max_keys: int = 32) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be a number of seconds > 0, got {interval!r}")
        if isinstance(max_keys, bool) or not isinstance(max_keys, int) or max_keys < 1:
            raise ValueError(f"max_keys must be an integer >= 1, got {max_keys!r}")
        self._sink = sink
        self._clock = clock
        self.interval = interval
        self.max_keys = max_keys
        self._known: dict[_Key, _Tally] = {}  # in the order first seen
        self._overflow = _Tally()
        self._ends: float | None = None  # monotonic end of the current interval; None: nothing known
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    def record(self, event: str, *, actor: str | None = None, **fields: object) -> None:
        if event != REFUSED or self._closed or not _ADDED.isdisjoint(fields):
            self._sink.record(event, actor=actor, **fields)
            return
        key: _Key = (None if actor is None else cap(actor),
                     tuple((name, cap(v) if isinstance(v, str) else v) for name, v in fields.items()))
        try:
            hash(key)
        except TypeError:  # a value that cannot be a key (a list): written as it is
            self._sink.record(event, actor=actor, **fields)
            return
        now = self._clock.monotonic()
        if self._ends is not None and now >= self._ends:
            self._end_interval(now)
        t = self._clock.now()
        tally = self._known.get(key)
        if tally is not None:
            tally.add(t)
        elif len(self._known) < self.max_keys:
            self._known[key] = _Tally()
            first = _Tally()
            first.add(t)
            self._sink.record(event, actor=actor, **fields, **first.times())
        else:
            self._overflow.add(t)
        if self._ends is None:
            self._ends = now + self.interval
        self._arm()

    def flush(self) -> None:
        """End the interval now if it is over by the clock (the timer calls this)."""
        now = self._clock.monotonic()
        if self._ends is not None and now >= self._ends:
            self._end_interval(now)

    def close(self) -> None:
        """Write every pending count, then close the sink."""
        if not self._closed:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._write_counts()
            self._known.clear()
        self._sink.close()

    # -- internals -------------------------------------------------------------------

    def _end_interval(self, now: float) -> None:
        self._write_counts()
        self._ends = now + self.interval if self._known else None

    def _write_counts(self) -> None:
        """One entry per key with a count (forgetting the keys without), then the overflow's."""
        for key, tally in list(self._known.items()):
            if not tally.count:
                del self._known[key]
                continue
            actor, fields = key
            self._sink.record(REFUSED, actor=actor, **dict(fields), **tally.times())
            self._known[key] = _Tally()
        over, self._overflow = self._overflow, _Tally()
        if over.count:
            self._sink.record(REFUSED, actor=None, overflow=True, **over.times(), max_keys=self.max_keys)

    def _arm(self) -> None:
        """On a running loop, have :meth:`_on_timer` called when the interval ends by the clock."""
        if self._timer is not None or self._ends is None:
            return
        with contextlib.suppress(RuntimeError):  # no running loop: the next refusal or close writes it
            loop = asyncio.get_running_loop()
            delay = max(self._ends - self._clock.monotonic(), 0.0)
            self._timer = loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._closed:
            return
        self.flush()
        self._arm()
