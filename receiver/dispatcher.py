"""The background worker that drains the outbox into PagerDuty.

It claims due queue heads (never two events of one dedup_key at once, so a resolve
never overtakes its trigger; resolves and critical triggers first), and sends each one
only when the routing key's sliding-window budget has room (:mod:`receiver.limiter`)
and the endpoint's circuit breaker lets it through (:mod:`receiver.breaker`). Keys
without budget are left out of the claim until they have room again, so one busy key
never holds up the others. How each delivery ended is then recorded by :mod:`receiver.settlement`
(ack, retry with backoff, a 429's pause, dead letter, with their metrics, audit and log lines).
Nothing is removed from the outbox before PagerDuty accepted it, so a crash at any
point only means a resend. While the breaker is open, events simply stay queued.

Per routing key name it counts how long each send waited for its key's budget
(:meth:`~receiver.limiter.RateLimiter.waited`), and it feeds the circuit breaker.

An unexpected exception — from the outbox, from the sender, or from a delivery's own
bookkeeping — ends :meth:`Dispatcher.run` (once the deliveries in flight have settled);
:mod:`receiver.supervisor` logs it, counts it and runs the dispatcher again. ``run`` tells
its supervisor each time it is healthy: a delivery settled, or a look at the queue left
nothing in flight.
An unavailable outbox is no fault: a settle is retried until it goes through (else a second send), a
failed claim ends ``run`` once those settled, and the supervisor pauses (:mod:`receiver.supervisor`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any

from receiver.audit import AuditSink, NullAudit
from receiver.breaker import CircuitBreaker
from receiver.clock import Clock
from receiver.errors import OutboxUnavailable, Reason
from receiver.limiter import Budget
from receiver.metrics import Metrics
from receiver.outbox import Outbox, OutboxItem
from receiver.pagerduty.events import Sender
from receiver.secret import Secret
from receiver.settings import PagerDutySettings
from receiver.settlement import Settlement
from receiver.status import RecentErrors

__all__ = ["MAX_IDLE_WAIT", "Dispatcher"]

MAX_IDLE_WAIT = 1.0
"""The longest the dispatcher goes without looking at the queue: another process (``pdrelay outbox replay``)
may have queued an event without a :meth:`Dispatcher.wake`, and it is sent within this time."""
_MIN_WAIT = 0.001
# What says PagerDuty's endpoint is unwell; 400s and 429s come from a healthy one.
_TRIPS_BREAKER = frozenset({Reason.SERVER_ERROR, Reason.TIMEOUT, Reason.CONNECTION})


class Dispatcher:
    """Claims, sends and settles outbox items until cancelled."""

    def __init__(
        self,
        outbox: Outbox,
        sender: Sender,
        routing_keys: Mapping[str, Secret],
        settings: PagerDutySettings,
        *,
        metrics: Metrics,
        clock: Clock,
        log: logging.Logger,
        limiter: Budget,
        breaker: CircuitBreaker,
        dry_run: bool = False,
        rand: Callable[[], float] = random.random,
        audit: AuditSink | None = None,
        errors: RecentErrors | None = None,
    ) -> None:
        self._outbox = outbox
        self._sender = sender
        self._keys = routing_keys
        self._settings = settings
        self._metrics = metrics
        self._clock = clock
        self._log = log
        self._dry_run = dry_run
        self._limiter = limiter
        self._breaker = breaker
        self._settlement = Settlement(
            outbox, settings, metrics=metrics, clock=clock, log=log, limiter=limiter, audit=audit or NullAudit(),
            errors=errors or RecentErrors(clock, frozenset(routing_keys)), rand=rand, dry_run=dry_run,
        )
        self._wakeup = asyncio.Event()
        self._inflight: dict[int, asyncio.Task[None]] = {}
        self._wakes = 0
        self._window_restored = False
        self._stopping = False
        self._fault: BaseException | None = None  # an unexpected error of a delivery: ends run()
        self._clean: Callable[[], None] = lambda: None
        self.looked_after = 0  # the number of wake() calls made before the latest look at the queue began
        self.drained = (0, 0)  # at the latest stop: (sends in flight that settled, sends cancelled unsettled)

    def wake(self, routing_keys: Iterable[str] | None = None) -> int:
        """Look for work now (called after intake commits ``routing_keys``' events).

        Free when nothing could come of it: every slot busy, or every key named still
        without budget (a storm on one key must not make the dispatcher spin). Returns this
        call's number: once :attr:`looked_after` reaches it, the dispatcher has looked at
        the queue since (what a caller that just changed the clock or the queue waits for)."""
        self._wakes += 1
        if len(self._inflight) >= self._settings.concurrency:
            return self._wakes
        if routing_keys is not None:
            allowed = [self._limiter.next_allowed(k) for k in routing_keys]
            now = self._clock.monotonic()  # after the limiter's own readings: "room now" is never in the future
            if all(at > now for at in allowed):
                return self._wakes
        self._wakeup.set()
        return self._wakes

    def stop(self) -> None:
        """End :meth:`run` at its next look at the queue, even if the cancellation that comes with a stop is
        lost (Python 3.11's ``asyncio.wait_for``, which redis-py uses to write a command, can swallow one)."""
        self._stopping = True
        self._wakeup.set()

    async def run(self, clean: Callable[[], None] = lambda: None) -> None:
        """Deliver until cancelled, or until an unexpected error (raised, for the supervisor); ``clean`` is
        called whenever the dispatcher is known to be healthy."""
        self._fault, self._clean = None, clean
        try:
            if not self._window_restored:
                await self._restore_window()
                self._window_restored = True
            while not self._stopping:
                self._raise_fault()
                wakes = self._wakes
                self._wakeup.clear()
                started = await self._dispatch_due()
                self.looked_after = wakes
                self._raise_fault()
                if not self._inflight:
                    clean()
                if len(self._inflight) >= self._settings.concurrency:
                    await self._wakeup.wait()
                else:
                    # Nothing startable now: never come straight back (no busy loop on clock edges).
                    await self._sleep_until_due(0.0 if started else _MIN_WAIT)
        except OutboxUnavailable:
            self._metrics.outbox_failed("delivery")
            # Sends already made settle first (each retries until the outbox takes it), not cancelled by the drain.
            await asyncio.gather(*self._inflight.values(), return_exceptions=True)
            raise
        finally:
            await self._drain()

    def _raise_fault(self) -> None:
        if self._fault is not None:
            fault, self._fault = self._fault, None
            raise fault

    def _failed(self, exc: BaseException) -> None:
        """A delivery failed unexpectedly: ``run`` raises it at its next turn (the first one, if several)."""
        if self._fault is None:
            self._fault = exc
        self._wakeup.set()

    async def _restore_window(self) -> None:
        """Seed the limiter with the sends the outbox remembers, so a restart does not provoke 429s."""
        now = self._clock.now()
        try:
            sends = await self._outbox.recent_sends(now - self._limiter.settings.longest_window)
        except OutboxUnavailable:
            self._log.warning("could not read recent send times; the rate window starts empty")
            return
        counted = self._limiter.seed((key, now - at) for key, at in sends)
        if counted:
            self._log.info("rate window restored from the outbox", extra={"sends": counted})

    async def _dispatch_due(self) -> int:
        """Start a delivery for every due head that has budget and that the breaker lets through."""
        total = 0
        while (free := self._settings.concurrency - len(self._inflight)) > 0:
            if self._breaker.retry_in() is not None:  # open: everything waits for the trial time
                return total
            blocked, _ = await self._limiter.refresh()
            # Snapshots: the claim runs on another thread, and a delivery finishing meanwhile must
            # still count as in flight for a query that may have read the outbox before its ack.
            items = await self._outbox.claim(free, frozenset(self._inflight), frozenset(blocked))
            started = 0
            for item in items:
                if item.superseded and self._settings.skip_superseded_triggers:
                    self._start(item, self._skip_superseded(item))  # sends nothing: no budget, no breaker
                    started += 1
                    continue
                if self._limiter.next_allowed(item.routing_key) > self._clock.monotonic():
                    continue  # no budget: an earlier item of this claim used the key's last slot
                if not self._breaker.allow():  # half-open with its single trial already out
                    return total + started
                waited = self._limiter.waited(item.routing_key, self._ready_at(item))
                # Room now means room a moment later too (sends only leave the window): this records. A shared
                # budget may have been taken by another replica meanwhile, or be unreachable: no send then.
                taken_at = await self._limiter.acquire(item.routing_key)
                if taken_at is None:
                    self._breaker.record_ignored()  # frees a half-open trial slot: nothing was sent
                    continue
                self._metrics.limiter_waited(item.routing_key, waited)
                self._start(item, self._deliver(item, taken_at))
                started += 1
            total += started
            if started == 0:
                return total
        return total

    def _ready_at(self, item: OutboxItem) -> float:
        """When ``item`` was ready to send (due), on the monotonic clock."""
        return self._clock.monotonic() - max(0.0, self._clock.now() - item.next_attempt_at)

    def _start(self, item: OutboxItem, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._inflight[item.id] = task
        task.add_done_callback(functools.partial(self._done, item.id))

    async def idle_wait(self, at_least: float = 0.0) -> float:
        """How long the dispatcher waits now, unless woken: until the next item is due, a key has budget
        again, or the breaker's trial time; at least ``at_least``, and at most :data:`MAX_IDLE_WAIT`."""
        # Before the outbox is read: a key whose room comes while it is read is then listed with that
        # time (now past), not left out as a key with room (a wait up to MAX_IDLE_WAIT for it).
        blocked, global_at = self._limiter.blocked()
        due = await self._outbox.next_due()
        waits = [MAX_IDLE_WAIT]
        if due is not None:
            waits.append(due - self._clock.now())
        # Read after the limiter's own reading: a limit with room answers "now", which must not look
        # like a moment still to come (the dispatcher would wake every _MIN_WAIT, a busy loop).
        now = self._clock.monotonic()
        waits.extend(t - now for t in blocked.values())
        if global_at > now:
            waits.append(global_at - now)
        if (retry_in := self._breaker.retry_in()) is not None:
            waits.append(retry_in)
        return max(at_least, min(waits))

    async def _sleep_until_due(self, at_least: float) -> None:
        """Until :meth:`idle_wait` has passed, or :meth:`wake`."""
        timeout = await self.idle_wait(at_least)
        if timeout <= 0:
            return
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that
        # arrives just as the event is set, and the dispatcher would then never stop.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wakeup.wait()

    def _done(self, item_id: int, _task: asyncio.Task[None]) -> None:
        self._inflight.pop(item_id, None)
        self._wakeup.set()

    async def _drain(self) -> None:
        """On shutdown, let requests in flight finish settling, for at most one request timeout
        and a little; what is still running then is cancelled and stays queued for next time."""
        tasks = list(self._inflight.values())
        self.drained = (0, 0)
        if not tasks:
            return
        done, pending = await asyncio.wait(tasks, timeout=self._settings.api_timeout + 5.0)
        self.drained = (len(done), len(pending))
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _deliver(self, item: OutboxItem, taken_at: float | None = None) -> None:
        try:
            await self._deliver_once(item, taken_at)
        except OutboxUnavailable:
            # An outbox write failed while settling: the item stays queued and is retried
            # after the next claim, so nothing is lost; say so loudly.
            self._log.exception("could not settle outbox item", extra={"item_id": item.id})
            await asyncio.sleep(1.0)  # hold the slot briefly: a broken outbox must not become a busy loop
        except Exception as exc:  # unexpected: the item stays queued; the dispatcher restarts
            self._failed(exc)
        else:
            self._clean()

    async def _skip_superseded(self, item: OutboxItem) -> None:
        """Settle a superseded trigger unsent (:meth:`~receiver.settlement.Settlement.superseded`)."""
        try:
            await self._settlement.superseded(item)
        except OutboxUnavailable:
            self._log.exception("could not settle outbox item", extra={"item_id": item.id})
            await asyncio.sleep(1.0)
        except Exception as exc:
            self._failed(exc)

    async def _deliver_once(self, item: OutboxItem, taken_at: float | None) -> None:
        key = Secret("dry-run") if self._dry_run else self._keys.get(item.routing_key)
        if key is None:
            self._breaker.record_ignored()  # nothing was sent
            await self._settlement.unknown_key(item)
            return
        started = self._clock.monotonic()
        try:
            result = await self._sender.send(key, item.body)
        except BaseException:
            self._breaker.record_ignored()  # cancelled at shutdown: says nothing about PagerDuty
            raise
        done = self._clock.monotonic()
        self._metrics.send_latency.observe(done - started)
        if taken_at is not None:
            await self._limiter.confirm(item.routing_key, taken_at, done)
            if not self._dry_run:
                self._outbox.note_send(item.routing_key, self._clock.now())
        if result.ok:
            self._breaker.record_success()
        elif result.reason in _TRIPS_BREAKER:
            self._breaker.record_failure()
        else:
            self._breaker.record_ignored()  # 400, 429: PagerDuty is up and answering
        await self._settlement.result(item, result)
